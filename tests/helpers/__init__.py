"""What tests build their inputs with: logs and record folders in this repository's format (``logfactory``), a
leaderboard's worth of records (``site_records``), tiny trained models (``use_factory``), a Hugging Face cache
filled offline (``data_fakehub``). Imported as ``helpers.<module>`` (pyproject.toml puts tests/ on the path)."""
