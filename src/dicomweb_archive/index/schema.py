"""The index schema as ordered migrations (sqlite-utils style), mirrored in ``schema/index.sql``.

The database's ``user_version`` counts the migrations applied; a test keeps ``schema/index.sql``
equal to these scripts.
"""

from __future__ import annotations

#: Ordered schema migrations; the database's ``user_version`` counts those applied.
#: The SQL text is mirrored in ``schema/index.sql`` (a test keeps them equal).
MIGRATIONS: tuple[str, ...] = (
    """
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
    """,
    """
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
    """,
    # series are keyed by study and series UID: a Series Instance UID found in two studies
    # is stored in both (docs/spec/store-layout.md)
    """
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
    """,
    # an instance whose Study, Series or SOP Instance UID is stored although it is not
    # conformant (PS3.5 9.1; docs/spec/store-layout.md): derived from the UIDs, so the rows
    # are rebuilt
    """
    ALTER TABLE instances ADD COLUMN nonconformant_uid INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX instances_nonconformant_uid ON instances(nonconformant_uid)
        WHERE nonconformant_uid = 1;
    """,
    # an instance whose received file ends inside Pixel Data (model/incomplete.py): derived
    # from its info record, so the rows are rebuilt
    """
    ALTER TABLE instances ADD COLUMN incomplete INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX instances_incomplete ON instances(incomplete) WHERE incomplete = 1;
    """,
    # QIDO-RS at scale (bench/qido.py): exact and prefix matching of AccessionNumber and
    # PatientID, case-folded PatientName prefixes (PostgreSQL's LIKE uses the expression
    # index), and the study order of a result page
    """
    CREATE INDEX studies_accession_number ON studies(accession_number);
    CREATE INDEX studies_patient_name_upper ON studies(upper(patient_name));
    CREATE INDEX studies_date_uid ON studies(study_date, study_instance_uid);
    """,
)

#: Migrations after which the index's rows must be rebuilt from the store (``reindex``).
REBUILDS = {3, 4, 5}
