"""DICOM networking (DIMSE, PS3.7) with pynetdicom: the archive as a storage SCP and a
Query/Retrieve SCP (``dicomweb-archive scp``).

A layer above ``ops/``, beside ``web/``: it may use ``ops/``, the ``Archive``, ``model/`` and the
index's conditions; never ``cli/`` or ``web/``.

- ``settings.py``: the server's settings and its C-MOVE destinations (``--peer``, a file);
- ``receive.py``: C-STORE, each data set ingested as ``mkdicomweb`` ingests a file;
- ``query.py``: C-FIND (PS3.4 C.4.1) answered from the index;
- ``send.py``: C-MOVE and C-GET (PS3.4 C.4.2, C.4.3), sending the exported files;
- ``server.py``: the application entity, its presentation contexts and association log.
"""
