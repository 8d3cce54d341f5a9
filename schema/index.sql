-- SQLite schema of the dicomweb-archive index (.dicomweb-archive/local/index.sqlite).
-- Generated from dicomweb_archive.index.schema.MIGRATIONS; tests/test_schema.py keeps them equal.
-- Migration 3 recreates the series, instances and audit tables: the rows are rebuilt from the store.
-- Migration 4 flags instances with a UID that is not conformant (PS3.5 9.1): rows rebuilt too.
-- Migration 5 flags instances whose received file ends inside Pixel Data: rows rebuilt too.

-- migration 1 (PRAGMA user_version = 1)
CREATE TABLE patients (
    patient_id TEXT PRIMARY KEY,
    patient_name TEXT,
    patient_birth_date TEXT,
    patient_sex TEXT,
    number_of_studies INTEGER NOT NULL
);
CREATE TABLE studies (
    study_instance_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL REFERENCES patients(patient_id),
    patient_name TEXT,
    patient_birth_date TEXT,
    patient_sex TEXT,
    study_date TEXT,
    study_time TEXT,
    accession_number TEXT,
    study_id TEXT,
    study_description TEXT,
    referring_physician_name TEXT,
    modalities_in_study TEXT,
    number_of_series INTEGER,
    number_of_instances INTEGER,
    path TEXT NOT NULL,
    query_json TEXT NOT NULL
);
CREATE INDEX studies_patient_id ON studies(patient_id);
CREATE INDEX studies_study_date ON studies(study_date);
CREATE TABLE series (
    series_instance_uid TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL REFERENCES studies(study_instance_uid),
    modality TEXT,
    series_number INTEGER,
    series_description TEXT,
    series_date TEXT,
    number_of_instances INTEGER,
    path TEXT NOT NULL,
    query_json TEXT NOT NULL
);
CREATE INDEX series_study ON series(study_instance_uid);
CREATE TABLE instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_instance_uid TEXT NOT NULL REFERENCES series(series_instance_uid),
    study_instance_uid TEXT NOT NULL REFERENCES studies(study_instance_uid),
    sop_class_uid TEXT,
    instance_number INTEGER,
    rows INTEGER,
    columns INTEGER,
    number_of_frames INTEGER NOT NULL,
    original_transfer_syntax_uid TEXT NOT NULL,
    stored_transfer_syntax_uid TEXT NOT NULL,
    original_sha256 TEXT NOT NULL,
    original_size INTEGER NOT NULL,
    path TEXT NOT NULL,
    query_json TEXT NOT NULL
);
CREATE INDEX instances_series ON instances(series_instance_uid);
CREATE INDEX instances_study ON instances(study_instance_uid);

-- migration 2 (PRAGMA user_version = 2)
CREATE TABLE audit (
    change_id TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    time TEXT NOT NULL,
    user TEXT NOT NULL,
    operation TEXT NOT NULL,
    level TEXT,
    target TEXT,
    reason TEXT,
    study_instance_uid TEXT,
    series_instance_uid TEXT,
    revision INTEGER,
    changes TEXT,
    before_sha256 TEXT,
    after_sha256 TEXT,
    PRIMARY KEY (change_id, sop_instance_uid)
);
CREATE INDEX audit_sop ON audit(sop_instance_uid);

-- migration 3 (PRAGMA user_version = 3)
DROP TABLE instances;
DROP TABLE series;
CREATE TABLE series (
    study_instance_uid TEXT NOT NULL REFERENCES studies(study_instance_uid),
    series_instance_uid TEXT NOT NULL,
    modality TEXT,
    series_number INTEGER,
    series_description TEXT,
    series_date TEXT,
    number_of_instances INTEGER,
    path TEXT NOT NULL,
    query_json TEXT NOT NULL,
    PRIMARY KEY (study_instance_uid, series_instance_uid)
);
CREATE INDEX series_uid ON series(series_instance_uid);
CREATE TABLE instances (
    sop_instance_uid TEXT PRIMARY KEY,
    series_instance_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL REFERENCES studies(study_instance_uid),
    sop_class_uid TEXT,
    instance_number INTEGER,
    rows INTEGER,
    columns INTEGER,
    number_of_frames INTEGER NOT NULL,
    original_transfer_syntax_uid TEXT NOT NULL,
    stored_transfer_syntax_uid TEXT NOT NULL,
    original_sha256 TEXT NOT NULL,
    original_size INTEGER NOT NULL,
    path TEXT NOT NULL,
    query_json TEXT NOT NULL,
    FOREIGN KEY (study_instance_uid, series_instance_uid)
        REFERENCES series(study_instance_uid, series_instance_uid)
);
CREATE INDEX instances_series ON instances(study_instance_uid, series_instance_uid);
DELETE FROM studies;
DELETE FROM patients;
DROP TABLE audit;
CREATE TABLE audit (
    change_id TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    time TEXT NOT NULL,
    user TEXT NOT NULL,
    operation TEXT NOT NULL,
    level TEXT,
    target TEXT,
    reason TEXT,
    study_instance_uid TEXT,
    series_instance_uid TEXT,
    revision INTEGER,
    changes TEXT,
    before_sha256 TEXT,
    after_sha256 TEXT,
    PRIMARY KEY (change_id, study_instance_uid, series_instance_uid, sop_instance_uid)
);
CREATE INDEX audit_sop ON audit(sop_instance_uid);
CREATE INDEX audit_change ON audit(change_id);
CREATE INDEX audit_sequence ON audit(sequence);

-- migration 4 (PRAGMA user_version = 4)
ALTER TABLE instances ADD COLUMN nonconformant_uid INTEGER NOT NULL DEFAULT 0;
CREATE INDEX instances_nonconformant_uid ON instances(nonconformant_uid)
    WHERE nonconformant_uid = 1;

-- migration 5 (PRAGMA user_version = 5)
ALTER TABLE instances ADD COLUMN incomplete INTEGER NOT NULL DEFAULT 0;
CREATE INDEX instances_incomplete ON instances(incomplete) WHERE incomplete = 1;

-- migration 6 (PRAGMA user_version = 6)
CREATE INDEX studies_accession_number ON studies(accession_number);
CREATE INDEX studies_patient_name_upper ON studies(upper(patient_name));
CREATE INDEX studies_date_uid ON studies(study_date, study_instance_uid);
