"""The judge: read logs and record folders, apply the rules of records/README.md, order records by the ledger.

``parse`` reads a log, ``records`` and ``layout`` a record folder, ``sourcecheck`` a log's code, ``upstream``
the maintainers' tables, ``ledger`` the git history; ``rules``, ``samenode`` and ``rulebook`` are the rules and
when they held; ``verify`` judges and ranks, ``history`` and ``compare`` put verdicts side by side; ``stats`` and
``tracks`` are the numbers they share; ``reproduced`` reads a maintainer's reproduced.json. It imports only
``tools.common``: never the site, never the runner (a log is read as text here, never run).
"""
