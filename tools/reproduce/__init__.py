"""Running a record's code again: the runner (``runner``: extract the code, check the data, run the trainer,
judge the reproduction, write reproduced.json), the sandbox it runs in (``sandbox``) and the GPU tolerances
derived from the public runs (``tolerances``). It imports ``tools.common`` and ``tools.judge``."""
