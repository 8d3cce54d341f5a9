"""An nginx configuration that serves a store's static subset of DICOMweb (``static-config``).

The store's served tree (``docs/spec/store-layout.md``) answers, file for file, the DICOMweb
(PS3.18) requests that need no computation: the Search transaction's (PS3.18 10.6) unfiltered
searches (study list, a study's series, a series' instances, and a search by StudyInstanceUID
or SeriesInstanceUID alone; other query parameters, PS3.18 10.6.1.2, are refused), and the
Retrieve transaction's (PS3.18 10.4) series and instance metadata (DICOM JSON, PS3.18 F.2),
single frames (the stored ``multipart/related`` body part, PS3.18 8.7.3) and bulk data, and
the thumbnails ``mkdicomweb --thumbnails`` wrote (PS3.18 thumbnail resources, as JPEG at their
default size, whatever the Accept header or query parameters ask).
This module writes the rewrites from those URLs to the files, with the Content-Type of each,
``Content-Encoding: gzip`` for the gzipped files (nginx's ``gzip_static``, and ``gunzip`` for
clients that do not accept gzip), optional CORS, and the safety rules: only these URLs reach a
file (the private ``.dicomweb-archive/`` folder, the deduplicated data, notifications and info
records are never served) and no symbolic link is followed (``disable_symlinks``). Everything
else, which needs ``dicomweb-archive serve``, is answered 400 (a search the files cannot
answer) or 404.

The configuration is for ``nginx -c FILE -p DIR``: its pid file, logs and temporary folders
are relative to DIR, so any user can run it, and it leaves ``daemon`` to the command line
(``-g 'daemon off;'``). The text is a pure function of the store's directory, its key layout
and the options.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dicomweb_archive import __version__
from dicomweb_archive.archive import Archive
from dicomweb_archive.errors import UsageError
from dicomweb_archive.store.keys import STUDIES_INDEX, StoreKeys
from dicomweb_archive.store.local import LocalStorage

#: a UID as a key step: digits and dots, non-empty components (PS3.5 9.1)
UID = r"[0-9]+(?:\.[0-9]+)*"
DICOM_JSON = "application/dicom+json"
#: a frame file is one body part whose first line is its boundary (store-layout.md)
FRAME_TYPE = "multipart/related"
#: a thumbnail file (``ops/render.py``) is a JPEG image
THUMBNAIL_TYPE = "image/jpeg"
#: a bulk-data file is the value's bytes: one part, no boundary (dicomweb-client reads it so)
BULK_TYPE = 'multipart/related; type="application/octet-stream"'
#: QIDO-RS keys a search answered from a file may carry: they change nothing in the answer
IGNORED = "(?:includefield|fuzzymatching)=[^&]*"
NEEDS_SERVE = (
    "this static server answers unfiltered searches only; "
    "filters, limit and offset need dicomweb-archive serve"
)
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
_ORIGIN = re.compile(
    r"\*|[a-z][a-z0-9+.-]*://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_HOST = re.compile(r"[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+")
_UNSAFE_IN_PATH = set('"\\${};\n\r\t')


@dataclass(frozen=True, slots=True)
class StaticOptions:
    """Where nginx listens, the DICOMweb root, and which origins may read it (CORS)."""

    port: int
    host: str = "127.0.0.1"
    prefix: str = "/dicomweb"
    cors_origins: Sequence[str] = field(default_factory=tuple)


def write_static_config(archive: Archive, options: StaticOptions) -> str:
    """The nginx configuration serving ``archive`` (:func:`to_nginx_config`).

    Raises:
        UsageError: see :func:`served_directory` and :func:`to_nginx_config`.
    """
    return to_nginx_config(served_directory(archive), archive.keys, options)


def served_directory(archive: Archive) -> Path:
    """The store's directory, with no symbolic link in it.

    Raises:
        UsageError: the store is not a directory (a ``memory://`` store).
    """
    storage = archive.storage
    if not isinstance(storage, LocalStorage):
        raise UsageError(
            f"{archive.location} is not a directory: a static server serves a store on disk"
        )
    return storage.root.resolve()


def to_nginx_config(root: Path, keys: StoreKeys, options: StaticOptions) -> str:
    """The nginx configuration serving the store at ``root`` (see the module docstring).

    Raises:
        UsageError: a value that cannot be written into the configuration safely (a prefix
            or origin with other characters than a URL's, a directory whose name holds a
            quote, backslash, ``$``, brace, ``;`` or control character).
    """
    _check(root, options)
    study, series, sop = "$dwa_study", "$dwa_series", "$dwa_sop"
    prefix = re.escape(options.prefix)
    s = f"(?<dwa_study>{UID})"
    r = f"(?<dwa_series>{UID})"
    i = f"(?<dwa_sop>{UID})"
    in_series_dir = keys.series_dir(study)
    series_list = keys.series_index(study).removeprefix(in_series_dir).removesuffix(".gz")
    singleton = keys.series_singleton(study, "$1").removeprefix(in_series_dir).removesuffix(".gz")
    lines = [
        f"# nginx configuration serving the dicomweb-archive store {root}",
        f"# as static DICOMweb at http://{_listen(options)}{options.prefix}",
        f"# (dicomweb-archive {__version__} static-config; docs/serving.md says what it answers).",
        "# Run it as any user, DIR a writable folder for its pid file, logs and temporary files:",
        "#   nginx -c FILE -p DIR -g 'daemon off;'",
        "worker_processes 1;",
        "pid nginx.pid;",
        "error_log error.log warn;",
        "events { worker_connections 512; }",
        "http {",
        "    access_log off;  # request URLs name studies and instances",
        "    log_not_found off;",
        "    client_body_temp_path client_body_temp;",
        "    proxy_temp_path proxy_temp;",
        "    fastcgi_temp_path fastcgi_temp;",
        "    uwsgi_temp_path uwsgi_temp;",
        "    scgi_temp_path scgi_temp;",
        "    server_tokens off;",
        "    sendfile on;",
        "    types { }",
        "",
        "    # QIDO-RS keys: none (or only includefield, fuzzymatching) answers the whole list,",
        "    # StudyInstanceUID or SeriesInstanceUID alone the one object; others are refused",
        "    map $args $dwa_studies {",
        '        default "";',
        f'        "" {_file(STUDIES_INDEX)};',
        f'        "~*^{IGNORED}(?:&{IGNORED})*$" {_file(STUDIES_INDEX)};',
        f'        "~*^(?:StudyInstanceUID|0020000D)=({UID})$" {_file(keys.study_index("$1"))};',
        "    }",
        "    map $args $dwa_series_file {",
        '        default "";',
        f'        "" {series_list};',
        f'        "~*^{IGNORED}(?:&{IGNORED})*$" {series_list};',
        f'        "~*^(?:SeriesInstanceUID|0020000E)=({UID})$" {singleton};',
        "    }",
        "    map $args $dwa_unfiltered {",
        '        default "";',
        '        "" yes;',
        f'        "~*^{IGNORED}(?:&{IGNORED})*$" yes;',
        "    }",
        *_cors_maps(options.cors_origins),
        "",
        "    server {",
        f"        listen {_listen(options)};",
        f'        root "{root}";',
        "        disable_symlinks on from=$document_root;  # never follow a link",
        "        gzip_static always;  # X.gz answers X, with Content-Encoding: gzip",
        "        gunzip on;  # decompressed for a client that does not accept gzip",
        "        gzip_vary on;",
        f"        default_type {DICOM_JSON};",
        *_cors_headers(options.cors_origins),
        "",
        "        # everything else: the private .dicomweb-archive/ folder, info records,",
        "        # deduplicated data, notifications, and what needs dicomweb-archive serve",
        '        location / { return 404 "not served here\\n"; }',
        "",
        f"        location = {options.prefix}/studies {{",
        f'            if ($dwa_studies = "") {{ return 400 "{NEEDS_SERVE}\\n"; }}',
        "            rewrite ^ $dwa_studies? break;",
        "        }",
        f'        location ~ "^{prefix}/studies/{s}/series$" {{',
        f'            if ($dwa_series_file = "") {{ return 400 "{NEEDS_SERVE}\\n"; }}',
        f"            rewrite ^ /{in_series_dir}$dwa_series_file? break;",
        "        }",
        f'        location ~ "^{prefix}/studies/{s}/series/{r}/instances$" {{',
        f'            if ($dwa_unfiltered = "") {{ return 400 "{NEEDS_SERVE}\\n"; }}',
        f"            rewrite ^ {_file(keys.instances_index(study, series))}? break;",
        "        }",
        f'        location ~ "^{prefix}/studies/{s}/series/{r}/metadata$" {{',
        f"            rewrite ^ {_file(keys.series_metadata(study, series))}? break;",
        "        }",
        f'        location ~ "^{prefix}/studies/{s}/series/{r}/instances/{i}/metadata$" {{',
        f"            rewrite ^ {_file(keys.instance_metadata(study, series, sop))}? break;",
        "        }",
        f'        location ~ "^{prefix}/studies/{s}/series/{r}/instances/{i}'
        '/frames/(?<dwa_frame>[1-9][0-9]{0,8})$" {',
        "            gzip_static off;",
        f"            default_type {FRAME_TYPE};",
        f"            rewrite ^ /{keys.frames_dir(study, series, sop)}$dwa_frame.mht? break;",
        "        }",
        *_thumbnail_locations(keys, f"{prefix}/studies/{s}", f"/series/{r}", f"/instances/{i}"),
        f'        location ~ "^{prefix}/studies/{s}/bulkdata/'
        '(?<dwa_bulk>[0-9a-f]{3}/[0-9a-f]{2}/[0-9a-f]{59})$" {',
        "            gzip_static off;",
        f"            default_type '{BULK_TYPE}';",
        f"            rewrite ^ /{keys.bulkdata_dir(study)}$dwa_bulk? break;",
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _thumbnail_locations(keys: StoreKeys, study: str, series: str, sop: str) -> list[str]:
    """The study, series and instance thumbnails (URL patterns: the study's, then the series'
    and instance's steps): their ``thumbnail.jpg`` files."""
    targets = [
        (study, keys.study_thumbnail("$dwa_study")),
        (study + series, keys.series_thumbnail("$dwa_study", "$dwa_series")),
        (study + series + sop, keys.instance_thumbnail("$dwa_study", "$dwa_series", "$dwa_sop")),
    ]
    lines = []
    for pattern, key in targets:
        lines += [
            f'        location ~ "^{pattern}/thumbnail$" {{',
            "            gzip_static off;",
            f"            default_type {THUMBNAIL_TYPE};",
            f"            rewrite ^ /{key}? break;",
            "        }",
        ]
    return lines


def _file(key: str) -> str:
    """The URI nginx maps to a key's file: ``X`` for ``X.gz`` (``gzip_static`` adds it)."""
    return "/" + key.removesuffix(".gz")


def _listen(options: StaticOptions) -> str:
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"{host}:{options.port}"


def _cors_maps(origins: Sequence[str]) -> list[str]:
    """``$dwa_cors_origin``: the request's Origin when it may read the store, else empty."""
    if not origins:
        return []
    lines = [
        "",
        "    # CORS: the origins that may read the store",
        "    map $http_origin $dwa_cors_origin {",
    ]
    lines.append('        default "";')
    if "*" in origins:
        lines.append('        "~." "*";')
    else:
        lines.extend(f'        "{origin}" $http_origin;' for origin in origins)
    lines += [
        "    }",
        "    map $dwa_cors_origin $dwa_cors_methods {",
        '        "" "";',
        '        default "GET, HEAD, OPTIONS";',
        "    }",
        "    map $dwa_cors_origin $dwa_cors_expose {",
        '        "" "";',
        '        default "ETag, Content-Type, Content-Length, Content-Encoding";',
        "    }",
    ]
    return lines


def _cors_headers(origins: Sequence[str]) -> list[str]:
    if not origins:
        return []
    return [
        "        add_header Access-Control-Allow-Origin $dwa_cors_origin always;",
        "        add_header Access-Control-Allow-Methods $dwa_cors_methods always;",
        "        add_header Access-Control-Allow-Headers"
        " $http_access_control_request_headers always;",
        "        add_header Access-Control-Expose-Headers $dwa_cors_expose always;",
        "        add_header Vary Origin always;",
        "        if ($request_method = OPTIONS) { return 204; }  # CORS preflight",
    ]


def _check(root: Path, options: StaticOptions) -> None:
    if not root.is_absolute() or _UNSAFE_IN_PATH & set(str(root)):
        raise UsageError(
            f"{root}: nginx cannot be given this directory (it needs an absolute path without "
            'quotes, backslashes, "$", braces, ";" or control characters)'
        )
    if not _PREFIX.fullmatch(options.prefix):
        raise UsageError(
            f"--prefix {options.prefix!r}: a path such as /dicomweb (letters, digits, '.', '_', "
            "'~', '-' between slashes)"
        )
    for origin in options.cors_origins:
        if not _ORIGIN.fullmatch(origin):
            raise UsageError(
                f"--cors-origin {origin!r}: an origin such as https://viewer.example:8443, or *"
            )
    if not 1 <= options.port <= 65535:
        raise UsageError(f"--port {options.port}: a TCP port, 1 to 65535")
    if not _HOST.fullmatch(options.host):
        raise UsageError(f"--host {options.host!r}: an IP address or host name")
