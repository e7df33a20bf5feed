"""Using a trained model: the ``sample``, ``evaluate`` and ``export`` commands and what they stand on.

- ``checkpoints``: read a checkpoint (train_scale.py's DCP folders) or an export folder (``python -m tools
  export``, or train_gpt.py's SPEEDRUN_EXPORT) into the trainer's own ``GPT``; write exports;
- ``generate``: autoregressive decoding with a KV cache from the model's own weights;
- ``hellaswag``: the HellaSwag benchmark, scored as the public evaluations score it;
- ``sample``, ``evaluate``, ``export``: the command modules (``add_arguments`` and ``run``).

The command modules import nothing heavy at module level: torch and the trainer are imported inside their
``run``, so that ``python -m tools --help`` stays fast. Tests: tests/test_use_*.py.
"""
