"""compile-flags: every way around the rule that a dishonest submitter tried fails, honest code passes.

The rule (tools/judge/sourcecheck.py) reads what it can and fails what it cannot: code that does not parse,
dynamic access to torch's settings, computed environment names. These cases are written here, from the
classes of issue 11; the concrete attacks of that issue are kept outside the repository.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import pytest

from helpers.logfactory import SEP, LogSpec, write_log
from tools.judge import sourcecheck
from tools.judge.parse import parse_log
from tools.judge.sourcecheck import (
    FLAG,
    KINDS,
    MAX_CODE_CHARS,
    MAX_SYNTAX_NODES,
    UNREADABLE,
    Finding,
    find_compile_flags,
)
from tools.judge.verify import verify_paths

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}.0"
NODES_WHY = "syntax nodes (a trainer has ~30,000): more than this rule reads"

FLAGGED = {
    # torch.compile reached or called in ways a name match misses
    "getattr-compile": "import torch\nm = getattr(torch, 'compile')(model, mode='max-autotune')\n",
    "getattr-compile-pieces": "import torch\nm = getattr(torch, 'com' + 'pile')(\n    model,\n    mode=M,\n)\n",
    "compile-as-value": "import torch\nfrom functools import partial\nc = partial(torch.compile, dynamic=False)\n",
    "compile-returned": "import torch\ndef pick():\n    return torch.compile\npick()(model, mode=M)\n",
    "compile-kwargs": "import torch\nm = torch.compile(model, **kw)\n",
    "compile-backend-custom": "import torch\nm = torch.compile(model, backend=my_backend)\n",
    "compile-backend-string": "import torch\nm = torch.compile(model, backend='cudagraphs')\n",
    "compiler-compile": "import torch\nm = torch.compiler.compile(model, options={'max_autotune': True})\n",
    "method-compile-multiline": "model.compile(\n    fullgraph=True,\n    mode=M,\n)\n",
    "mode-string": "import torch\nMODE = 'max-autotune-no-cudagraphs'\n",
    # inductor's config, however it is reached
    "importlib": "import importlib\nimportlib.import_module('torch._inductor.config').max_autotune = True\n",
    "dunder-import": "__import__('torch._inductor.config').max_autotune = True\n",
    "sys-modules": "import sys\nsys.modules['torch._inductor.config'].max_autotune = True\n",
    "vars": "import torch\nvars(cfg)['max_autotune'] = True\n",
    "dunder-setattr": "import torch._inductor.config as c\nc.__setattr__('max_autotune', True)\n",
    "setattr-computed": "def f(cfg, name):\n    setattr(cfg, name, True)\n",
    "setattr-literal-alias": "import torch\ncfg = getattr(torch, '_ind' + 'uctor')\n",
    "dunder-dict": "import torch\ntorch.__dict__['compile'](model)\n",
    "reexported-torch": "import torch.compiler\ntorch.compiler.torch._inductor.config.max_autotune = True\n",
    "reexported-config": "import torch._functorch.partitioners as p\np.inductor_config.max_autotune = True\n",
    # code the log does not carry: a module it writes and imports, a package outside the record image
    "imports-a-module-it-wrote": "open('helper.py', 'w').write(CODE)\nimport helper\n",
    "from-a-module-it-wrote": "from helper import setup\nsetup()\n",
    "relative-import": "from . import helper\n",
    "package-outside-the-image": "import flash_attn_interface\nflash_attn_interface.flash_attn_func(q, k, v)\n",
    "nvml-outside-the-image": "import pynvml\npynvml.nvmlInit()\n",  # the image lacks it: a file the run brings
    # code loaded from files: unpickling runs code, the hub fetches it
    "torch-load-pickle": "import torch\nsd = torch.load(path, weights_only=False)\n",
    "torch-load-kwargs": "import torch\nsd = torch.load(path, **kw)\n",
    "torch-load-imported": "from torch.serialization import load\nsd = load(path, weights_only=flag)\n",
    "numpy-load-pickle": "import numpy as np\nx = np.load(path, allow_pickle=True)\n",
    "numpy-load-positional": "import numpy as np\nx = np.load(path, None, True)\n",
    "torch-hub": "import torch\nm = torch.hub.load('someone/repo', 'model')\n",
    # the standard library's other runners of code strings and resolvers of dotted names
    "mock-patch": "from unittest import mock\nmock.patch('torch._in' + 'ductor.config.max_autotune', True).start()\n",
    "mock-patch-dict-env": "import unittest.mock\nunittest.mock.patch.dict('os.environ', {name: '1'}).start()\n",
    "timeit-code": "import timeit\ntimeit.timeit(code, number=1)\n",
    "pdb-run": "import pdb\npdb.run(code)\n",
    "cprofile-run": "import cProfile\ncProfile.run(code)\n",
    "pydoc-locate": "import pydoc\npydoc.locate(name).max_autotune = True\n",
    "torch-import-dotted": "import torch\ntorch._utils._import_dotted_name(name).max_autotune = True\n",
    "logging-config-factory": "import logging.config\nlogging.config.dictConfig(cfg)\n",
    "exec-another-program": "import os\nos.execv('/usr/bin/env', ['env', name + '=1', 'python', 'train.py'])\n",
    "sys-path-shadowing": "import sys\nsys.path.insert(0, 'vendor')\nimport numpy\n",
    # another program: a Python, a shell or a launcher runs code the log does not carry
    "subprocess-python": "import subprocess\nsubprocess.run(['python', 'train_other.py'])\n",
    "subprocess-env": "import subprocess\nsubprocess.run(['env', name + '=1', 'python', 'train_gpt.py'])\n",
    "subprocess-computed": "import subprocess\nsubprocess.run(cmd)\n",
    "popen-shell-path": "from subprocess import Popen\nPopen(['/bin/bash', '-c', script])\n",
    "subprocess-own-binary": "import subprocess\nsubprocess.run(['./fast_kernels', '--tune'])\n",
    "subprocess-look-alike": "import subprocess\nsubprocess.run(['/tmp/nvidia-smi'])\n",
    "subprocess-args-keyword": "import subprocess as sp\nsp.check_call(args=['torchrun', 'x.py'])\n",
    # os and sys re-exported by other modules (posixpath.os, torch.sys, collections._sys)
    "reexported-os-environ": "import posixpath\nk = 'TORCHXNDUCTOR_X'.replace('X', 'I')\nposixpath.os.environ[k] = '1'\n",
    "reexported-os-path-os": "import os\nos.path.os.environ[name] = '1'\n",
    "reexported-torch-os": "import torch\ntorch.os.environ.update(env)\n",
    "reexported-torch-sys": "import torch\ntorch.sys.modules['torch._inductor.config'].max_autotune = True\n",
    "reexported-underscore-sys": "from collections import _sys\n_sys.modules[name].max_autotune = True\n",
    "other-module-config": "from torch.fx.experimental import proxy_tensor\nproxy_tensor.config.max_autotune = True\n",
    "assigned-alias": "import torch.fx.experimental.proxy_tensor\npt = torch.fx.experimental.proxy_tensor\npt.config.max_autotune = True\n",
    "module-handed": "import torch\ndef f(m):\n    m._inductor.config.max_autotune = True\nf(torch)\n",
    "custom-backend": (
        "import torch\nfrom torch._inductor.compile_fx import compile_fx\n"
        "def be(gm, inputs):\n    return compile_fx(gm, inputs, config_patches={'max_autotune': True})\n"
    ),
    "config-patches-anywhere": "def be(gm, inputs):\n    return fx(gm, inputs, config_patches=p)\n",
    "wrapper": "import torch\nb = torch._TorchCompileInductorWrapper(m, None, False)\n",
    "dynamo-alias": "import torch\ncfg = torch._dynamo.config\n",
    "dynamo-global-alias": "import torch\ndef f():\n    global cfg\n    cfg = torch._dynamo.config\n",
    "dynamo-handed": "import torch._dynamo\nf(torch._dynamo.config)\n",
    "dynamo-patch": "import torch\n@torch._dynamo.config.patch(cache_size_limit=8)\ndef f():\n    pass\n",
    "dynamo-optimize": "import torch\nm = torch._dynamo.optimize('inductor')(model)\n",
    "dynamo-lookup": "from torch._dynamo import lookup_backend\nfx = lookup_backend('inductor')\n",
    "compiler-default-backend": "import torch\ntorch.compiler.set_default_backend('inductor')\n",
    "torch-monkeypatch": "import torch\ntorch.nn.functional.scaled_dot_product_attention = fast\n",
    # dynamic code and reflection
    "exec": "exec('import torch')\n",
    "eval": "x = eval(text)\n",
    "builtin-compile": "code = compile(text, 'f', 'exec')\n",
    "globals": "globals()['torch']\n",
    "frame": "import sys\nsys._getframe().f_globals\n",
    "getattr-as-value": "import torch\nfrom functools import reduce\nc = reduce(getattr, ['_inductor', 'config'], torch)\n",
    "getattr-computed-on-module": "import torch\nf = getattr(torch, name)\n",
    "pickle": "import pickle\nstate = pickle.loads(blob)\n",
    "star-import": "from torch import *\n",
    "subclasses": "x = ().__class__.__base__.__subclasses__()\n",
    # the environment
    "env-literal": "import os\nos.environ['TORCHINDUCTOR_MAX_AUTOTUNE'] = '1'\n",
    "env-concat": "import os\nos.environ['TORCH' + 'IND' + 'UCTOR_MAX_AUTOTUNE'] = '1'\n",
    "env-fstring": "import os\nos.environ[f'TORCH{part}_MAX_AUTOTUNE'] = '1'\n",
    "env-join": "import os\nos.environ['_'.join(['TORCHIND' + 'UCTOR', 'MAX', 'AUTOTUNE'])] = '1'\n",
    "env-update-computed": "import os\nos.environ.update({key: '1'})\n",
    "env-update-kwargs": "import os\nos.environ.update(**extra)\n",
    "env-setdefault-computed": "import os\nos.environ.setdefault(prefix + 'MAX_AUTOTUNE', '1')\n",
    "env-putenv": "import os\nos.putenv(key, '1')\n",
    "env-from-import": "from os import environ as E\nE[key] = '1'\n",
    "env-handed": "import os\ndef f(e):\n    e['X'] = '1'\nf(os.environ)\n",
    "env-dict-setitem": "import os\ndict.__setitem__(os.environ, key, '1')\n",
    "env-unprefixed": "import os\nos.environ['ENABLE_PERSISTENT_TMA_MATMUL'] = '1'\n",
    "env-child-computed": "import subprocess\nsubprocess.run(cmd, env=env)\n",
    "env-child-inductor": "import subprocess\nsubprocess.run(cmd, env={'TORCHINDUCTOR_X': '1'})\n",
    "shell": "import os\nos.system(command)\n",
    "shell-true": "import subprocess\nsubprocess.run(command, shell=True)\n",
    "another-python": "import subprocess, sys\nsubprocess.run([sys.executable, '-c', code])\n",
    # code that cannot be read
    "does-not-parse": "import torch\ntorch._inductor.config.max_autotune = True\nthis is not python(\n",
}

ALLOWED = {
    "subprocess-tool": (
        "import subprocess\nout = subprocess.run(['nvidia-smi', *args], capture_output=True, text=True)\n"
        "subprocess.run('nvidia-smi -L', capture_output=True)\nsubprocess.check_output(['/usr/bin/git', 'rev-parse', 'HEAD'])\n"
    ),
    "torch-load-weights": "import torch\nsd = torch.load(path, map_location='cpu')\nsd = torch.load(path, weights_only=True)\n",
    "numpy-load-arrays": "import numpy as np\nx = np.load(path, mmap_mode='r')\ny = np.load(path, allow_pickle=False)\n",
    "plain-compile": (
        "import torch\nm = torch.compile(model)\nn = torch.compile(model, dynamic=False, fullgraph=True)\n"
        "@torch.compile\ndef f(x):\n    return x\n@torch.compile(fullgraph=True)\ndef g(x):\n    return x\n"
        "model.compile()\nk = torch.compile(model, **{'dynamic': False}, backend='inductor')\n"
    ),
    "fp8-helper": (
        "import torch\n@torch.compile\ndef mm(a, b, sa, sb):\n"
        "    return torch._scaled_mm(a.to(torch.float8_e4m3fn), b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)\n"
    ),
    "getattr-literal": (
        "import torch.distributed as dist\nw = getattr(layer, 'weight')\n"
        "gather = getattr(dist, 'all_gather_single', dist.all_gather_into_tensor)\ngather(out, x)\n"
    ),
    "getattr-computed-on-object": "def f(args, fields):\n    return [getattr(args, f.name) for f in fields]\n",
    "environment": (
        "import os\nrank = int(os.environ.get('RANK', 0))\nenv = dict(os.environ)\nos.environ['NCCL_DEBUG'] = 'WARN'\n"
        "os.environ.setdefault('OMP_NUM_THREADS', '1')\nlaunched = 'RANK' in os.environ\n"
        "os.environ.update({'A': '1'}, B='2')\ndel os.environ['A']\nfor k in os.environ:\n    pass\n"
        "import subprocess\nsubprocess.run(['nvidia-smi'], capture_output=True, text=True, timeout=60, env={**os.environ, 'X': '1'})\n"
    ),
    "torch-settings": (
        "import torch\nimport torch._dynamo\ntorch.backends.cuda.matmul.allow_tf32 = True\n"
        "torch.backends.cudnn.allow_tf32 = True\ntorch._dynamo.config.cache_size_limit = 64\n"
        "torch._dynamo.reset()\ntorch._dynamo.mark_dynamic(x, 0)\ntorch.compiler.cudagraph_mark_step_begin()\n"
        "torch.set_float32_matmul_precision('high')\n"
    ),
    "shadowing": (
        "from torch._dynamo import config\nconfig.cache_size_limit = 64\n"
        "def build(config):\n    layers(config)\n    config.n_layer = 3\n    return config\n"
        "class Block:\n    def __init__(self, config):\n        self.config = config\n"
    ),
    "regex-compile": "import re\npattern = re.compile(r'step:(\\d+)', re.M)\n",
    "field-named-compile": "class H:\n    compile: bool = True\nh = H()\nm = torch.compile(model) if h.compile else model\n",
    "frozen-dataclass": "class P:\n    def f(self):\n        object.__setattr__(self, 'x', 1)\n        super().__setattr__('y', 2)\n",
    "docstrings": '"""Sets no TORCHINDUCTOR_MAX_AUTOTUNE and no mode=max-autotune."""\nimport torch\n',
    "python-3-8-walrus": "if (n := len(x)) > 2:\n    pass\n",
    # PEP 263 declarations of UTF-8, which Python reads as the log's text is read; one after a line of code is none
    "coding-utf-8": "# -*- coding: utf-8 -*-\nimport torch\nx = 'é'\n",
    "coding-utf-8-names": "#!/usr/bin/env python\n# vim: set fileencoding=UTF8 :\nx = 1\n",
    "coding-utf-8-sig": "# coding=utf-8-sig\nx = 1\n",
    "coding-after-code": "x = 1\n# coding: utf-7\ny = 'a+b'\n",
    # names of other scripts that read as no ASCII name, invisible characters where Python reads them as text
    "greek-and-cyrillic-names": "α = 0.5\nσ = 1.0\nlr_η = α * σ\nразмер = 3\n",
    "fullwidth-name": "ｘ = 1\nprint(x)\n",  # NFKC: one name to Python, and it reads as one
    "emoji-in-strings": "print('⚠\ufe0f done 👨\u200d💻')  # a variation selector, a zero-width joiner\n",
    # Hugging Face's kernels, which the public rules allow (public records since 2025-09-03)
    "kernels-from-the-hub": (
        "from kernels import get_kernel\nimport kernels\n"
        "fa3 = get_kernel('varunneal/flash-attention-3').flash_attn_interface\nk = kernels.get_kernel('org/repo')\n"
    ),
}


# What each kind of finding is: (line, kind, option) of every finding. FLAG: the code sets a compiler option by a
# route the rule reads (what the public speedrun's rule forbids); UNREADABLE: the rest it refuses.
KINDS_OF: dict[str, tuple[str, set[tuple[int, str, str | None]]]] = {
    "config-set-directly": ("import torch\ntorch._inductor.config.max_autotune = True\n", {(2, FLAG, "max_autotune")}),
    "config-import-alias": (
        "import torch._inductor.config as cfg\ncfg.coordinate_descent_tuning = True\n",
        {(1, UNREADABLE, None), (2, FLAG, "coordinate_descent_tuning")},
    ),
    "config-assigned-alias": (
        "import torch\nind = torch._inductor\nind.config.triton.cudagraphs = True\n",
        {(2, UNREADABLE, None), (3, FLAG, "triton.cudagraphs")},
    ),
    "config-setattr": (
        "import torch\nsetattr(torch._inductor.config, 'max_autotune', True)\n",
        {(2, FLAG, "max_autotune"), (2, UNREADABLE, None)},
    ),
    "config-reexported": (
        "import torch._functorch.partitioners as p\np.inductor_config.max_autotune = True\n",
        {(2, FLAG, "max_autotune")},
    ),
    "config-patch": (
        "import torch\n@torch._inductor.config.patch(coordinate_descent_tuning=True)\ndef f():\n    pass\n",
        {(2, FLAG, "coordinate_descent_tuning")},
    ),
    "config-patch-several": (
        "import torch\nwith torch._inductor.config.patch({'a': 1, 'b': 2}):\n    pass\n",
        {(2, FLAG, "patch")},
    ),
    "env-var": (
        "import os\nos.environ['TORCHINDUCTOR_COORDINATE_DESCENT_TUNING'] = '1'\n",
        {(2, UNREADABLE, None), (2, FLAG, "coordinate_descent_tuning")},  # the string, and the write
    ),
    "env-var-update": (
        "import os\nos.environ.update(TORCHINDUCTOR_MAX_AUTOTUNE='1')\n",
        {(2, FLAG, "max_autotune")},
    ),
    "env-var-unprefixed": (
        "import os\nos.putenv('ENABLE_PERSISTENT_TMA_MATMUL', '1')\n",
        {(2, UNREADABLE, None), (2, FLAG, "ENABLE_PERSISTENT_TMA_MATMUL")},
    ),
    "env-var-child": (
        "import subprocess\nsubprocess.run(['git'], env={'TORCHINDUCTOR_MAX_AUTOTUNE': '1'})\n",
        {(2, UNREADABLE, None), (2, FLAG, "max_autotune")},
    ),
    "compile-mode": ("import torch\nm = torch.compile(model, mode='max-autotune')\n", {(2, FLAG, "mode=max-autotune")}),
    "compile-mode-computed": ("import torch\nm = torch.compile(model, mode=M)\n", {(2, FLAG, "mode")}),
    "compile-mode-alias": (  # handing torch.compile around is unreadable; the call through the alias still a FLAG
        "import torch\nc = torch.compile\nm = c(model, mode='reduce-overhead')\n",
        {(2, UNREADABLE, None), (3, FLAG, "mode=reduce-overhead")},
    ),
    "compile-options": (
        "import torch\nm = torch.compile(model, options={'coordinate_descent_tuning': True})\n",
        {(2, FLAG, "coordinate_descent_tuning")},
    ),
    "compile-backend": (
        "import torch\nm = torch.compile(model, backend='cudagraphs')\n",
        {(2, FLAG, "backend=cudagraphs")},
    ),
    "compile-partial": (
        "import functools, torch\nc = functools.partial(torch.compile, mode='max-autotune')\n",
        {(2, UNREADABLE, None), (2, FLAG, "mode=max-autotune")},  # the mode's string, and the partial
    ),
    "config-patches": ("fx(gm, inputs, config_patches={'max_autotune': True})\n", {(1, FLAG, "max_autotune")}),
    # refused as code the rule cannot show to comply
    "exec": ("exec('import torch')\n", {(1, UNREADABLE, None)}),
    "unknown-import": ("import fastkernels\n", {(1, UNREADABLE, None)}),
    "inductor-internal": (
        "import torch\ntorch._inductor.codecache.trace_structured = f\n",
        {(2, UNREADABLE, None)},  # a monkeypatch, not an option
    ),
    "inductor-config-read": (
        "import torch._inductor.config as cfg\nprint(cfg.max_autotune)\n",
        {(1, UNREADABLE, None), (2, UNREADABLE, None)},
    ),
    "env-var-removed": (
        "import os\ndel os.environ['TORCHINDUCTOR_MAX_AUTOTUNE']\n",
        {(2, UNREADABLE, None)},  # a default restored: no extra flag
    ),
    "env-var-computed": ("import os\nos.environ[name] = '1'\n", {(2, UNREADABLE, None)}),
    "mode-string": ("MODE = 'max-autotune'\n", {(1, UNREADABLE, None)}),
    "compile-kwargs": ("import torch\nm = torch.compile(model, **kw)\n", {(2, UNREADABLE, None)}),
    "dynamo-patch": (  # dynamo's options are not inductor's: the rule lets a record set them by name
        "import torch\n@torch._dynamo.config.patch(cache_size_limit=8)\ndef f():\n    pass\n",
        {(2, UNREADABLE, None)},
    ),
    "does-not-parse": (
        "import torch\ntorch._inductor.config.max_autotune = True\nnot python(\n",
        {(3, UNREADABLE, None)},
    ),
    # an encoding other than UTF-8: Python runs the file's bytes decoded with it (issue 20)
    "coding-utf-7-hides-a-line": (
        "# -*- coding: utf-7 -*-\nimport torch\n# a note +AAo-torch._inductor.config.max_autotune = True\n",
        {(1, UNREADABLE, None), (1, FLAG, "max_autotune")},  # the declaration, and what Python reads under it
    ),
    "coding-latin-1": ("#!/usr/bin/env python\n# -*- coding: latin-1 -*-\nx = 1\n", {(2, UNREADABLE, None)}),
    "coding-unknown": ("# coding: no-such-codec\nx = 1\n", {(1, UNREADABLE, None)}),
    "coding-not-text": ("# coding: rot13\nx = 1\n", {(1, UNREADABLE, None)}),
    # names a reader cannot tell from others, and lines whose order shows otherwise than Python reads it (issue 20)
    "name-hangul-filler": (
        "import torch\nㅤ = torch.nn\nm = ㅤ.Linear(4, 4)\n",
        {(2, UNREADABLE, None), (3, UNREADABLE, None)},
    ),
    "name-variation-selector": ("lr = 0.1\nlr\ufe00 = 0.9\n", {(2, UNREADABLE, None)}),
    "attribute-and-keyword-fillers": (
        "model.lr\u3164 = 3\nf(x\u115f=1)\n",
        {(1, UNREADABLE, None), (2, UNREADABLE, None)},
    ),
    "name-cyrillic-look-alike": ("class A:\n    def f(ѕelf):\n        pass\n", {(2, UNREADABLE, None)}),
    "name-mixed-scripts": ("tоrch_η = 1\n", {(1, UNREADABLE, None)}),
    "name-all-look-alikes": ("рос = 3\n", {(1, UNREADABLE, None)}),
    "name-latin-dotless-i": ("prınt(1)\n", {(1, UNREADABLE, None)}),
    "import-as-look-alike": ("import numpy as nр\n", {(1, UNREADABLE, None)}),
    "bidi-override-in-a-comment": ("ok = True  # \u202e } ;eslaF = ko {\n", {(1, UNREADABLE, None)}),
}


@pytest.mark.parametrize("name", sorted(KINDS_OF))
def test_each_finding_has_its_kind_and_option(name: str) -> None:
    code, expected = KINDS_OF[name]
    assert {(f.line, f.kind, f.option) for f in find_compile_flags(code, HERE)} == expected


@pytest.mark.parametrize("name", sorted(FLAGGED))
def test_every_finding_has_a_kind_and_a_flag_names_its_option(name: str) -> None:
    for f in find_compile_flags(FLAGGED[name], HERE):
        assert f.kind in KINDS and (f.option is not None) == (f.kind == FLAG), f


@pytest.mark.parametrize("name", sorted(FLAGGED))
def test_compile_flags_ways_around_the_rule_fail(name: str) -> None:
    assert find_compile_flags(FLAGGED[name], HERE), FLAGGED[name]


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_compile_flags_honest_code_passes(name: str) -> None:
    assert find_compile_flags(ALLOWED[name], HERE) == []


def test_a_coding_cookie_hides_no_setting(tmp_path: Path) -> None:
    """Issue 20: under ``# -*- coding: utf-7 -*-`` Python ran, as a line of code, what this rule and the code diff
    read as a comment (each such log hid a max_autotune setting). The log shows the file as UTF-8 text; Python decodes
    its bytes as the cookie says."""
    code = KINDS_OF["coding-utf-7-hides-a-line"][0]
    assert "max_autotune" in compile(code.encode("utf-8"), "train_gpt.py", "exec").co_names  # what Python runs
    assert "max_autotune" not in compile(code, "train_gpt.py", "exec").co_names  # what the text shows: a comment
    cookie, hidden = find_compile_flags(code, HERE)
    assert cookie.what.startswith("declares the encoding utf-7 (PEP 263): Python decodes this file's bytes as utf-7")
    assert hidden.what == (
        "in the code as Python decodes it (utf-7), its line 4: sets torch._inductor.config option 'max_autotune': "
        "torch._inductor.config.max_autotune = True"
    )
    # an appended file is a module of its own, with its own first two lines
    log = write_log(tmp_path, LogSpec(source=f"import torch\n\n\n{'-' * 40}\n# helper.py\n{code}"))
    (v,) = verify_paths([log], track="track_1_short", known_shards={})
    found = [(f.kind, f.evidence) for f in v.failures if f.rule == "compile-flags"]
    assert [kind for kind, _ in found] == [UNREADABLE, FLAG], found
    assert found[0][1].startswith("helper.py line 1: declares the encoding utf-7 (PEP 263)"), found
    assert found[1][1].startswith("helper.py line 1: in the code as Python decodes it (utf-7)"), found


def test_a_name_that_renders_as_nothing_or_as_another_name_is_refused(tmp_path: Path) -> None:
    """Issue 20: Python takes U+3164 HANGUL FILLER for a letter, so ``ㅤ = ...`` binds a name that shows as a blank,
    and ``lr`` and ``lr`` + VARIATION SELECTOR-1 are two names that look like one; a Cyrillic ``о`` makes ``tоrch`` a
    name that reads as ``torch``. Each finding names the character, and what the name shows as."""
    code = "import torch\nlr = 0.02\nlr\ufe00 = 2.0  # the one the optimizer reads\nopt = torch.optim.SGD(p, lr=lr\ufe00)\n"
    namespace: dict[str, object] = {}
    exec(compile("lr = 0.02\nlr\ufe00 = 2.0\n", "x", "exec"), namespace)
    assert namespace["lr"] == 0.02 and namespace["lr\ufe00"] == 2.0  # two names, one look
    found = find_compile_flags(code, HERE)
    assert [(f.line, f.kind) for f in found] == [(3, UNREADABLE), (4, UNREADABLE)], found
    assert found[0].what.startswith(
        "the name 'lr\\ufe00' holds U+FE00 VARIATION SELECTOR-1, which renders as nothing: it shows as 'lr', a name "
        "it is not: lr"
    )
    (blank,) = find_compile_flags("ㅤ = 1\n", HERE)
    assert (
        blank.what.startswith("the name '\\u1160' holds U+1160 HANGUL JUNGSEONG FILLER")
        and "shows as nothing" in blank.what
    )
    (alike,) = find_compile_flags("import torch\ntоrch = None\n", HERE)
    assert alike.what.startswith(
        "the name 'tоrch' is spelled with U+043E CYRILLIC SMALL LETTER O, look-alike letters: it reads as 'torch'"
    )
    # a harness record fails compile-flags with it; the failure names the log and the line
    log = write_log(tmp_path, LogSpec(source=code))
    (v,) = verify_paths([log], track="track_1_short", known_shards={})
    evidence = [f.evidence for f in v.failures if f.rule == "compile-flags" and f.file == str(log)]
    assert len(evidence) == 2 and evidence[0].startswith("source line 3: the name 'lr\\ufe00' holds"), evidence


def test_a_module_appended_to_the_log_may_be_imported() -> None:
    code = "import torch\nimport helper\nfrom helper import setup\n"
    assert find_compile_flags(code, None, ["helper"]) == []
    assert [f.line for f in find_compile_flags(code)] == [2, 3]


def test_the_record_packages_are_the_images() -> None:
    """Every package of requirements.txt is importable by a record under the names it installs."""
    import importlib.metadata

    from tools.judge.sourcecheck import _RECORD_PACKAGES

    requirements = Path(__file__).resolve().parent.parent / "requirements.txt"
    names = [ln.split("==")[0].strip().lower() for ln in requirements.read_text().splitlines() if "==" in ln]
    provides: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            # the top-level name an import sees (a namespace package can be listed as "nvidia/cusparselt")
            provides.setdefault(dist.lower().replace("-", "_"), set()).add(module.split("/")[0])
    torch_needs = [
        re.split(r"[<>=;\[ ]", r)[0].lower()
        for r in importlib.metadata.requires("torch") or []
        if "extra ==" not in r and not r.startswith("setuptools")  # setuptools runs setup scripts: not for records
    ]
    for name in names + torch_needs:
        modules = provides.get(name.replace("-", "_"), set())
        if modules:  # installed here
            assert modules & _RECORD_PACKAGES, (name, modules)


def test_this_repository_trainer_passes(repo_root: Path) -> None:
    source = (repo_root / "train_gpt.py").read_text(encoding="utf-8")
    assert find_compile_flags(source, HERE) == []


def test_a_finding_names_the_line_and_says_what() -> None:
    found = find_compile_flags(FLAGGED["getattr-compile-pieces"], HERE)
    assert found == [Finding(2, "passes mode= to torch.compile: m = getattr(torch, 'com' + 'pile')(", FLAG, "mode")]
    first, *_ = find_compile_flags("import os\nos.environ[k] = '1'\n", HERE)
    assert first.line == 2 and first.what.startswith(
        "writes an environment variable whose name is computed (os.environ)"
    )


def test_code_that_does_not_parse_fails_instead_of_a_fallback() -> None:
    """A broken line once handed the file to a per-line regex, which missed a multi-line call."""
    source = "import torch\nm = torch.compile(\n    model,\n    mode=M,\n)\ndef broken(:\n"
    ((line, what, kind, _),) = [astuple(f) for f in find_compile_flags(source, HERE)]
    assert line == 6 and "does not parse as Python" in what and "judges only code it can read" in what
    assert kind == UNREADABLE


def test_grammar_of_the_python_the_log_names() -> None:
    # A newer Python's log is read with this judge's grammar: what parses is judged, what uses syntax the
    # judge does not know fails with the Python to judge it with.
    assert find_compile_flags("x = 1\n", "3.99.1") == []
    assert find_compile_flags("import torch\nm = torch.compile(f, mode='max-autotune')\n", "3.99.1") != []
    (found,) = find_compile_flags("x = 1\ndef f[T](:\n", "3.99.1")
    line, what = found.line, found.what
    assert line == 2 and "names Python 3.99" in what and "judge it with Python >= 3.99" in what
    # ... and is read around: a flag set after a line of newer syntax (a PEP 701 f-string, in two public medium
    # records' logs of Python 3.12) is still found; the line itself is unreadable.
    source = 'import torch\nprint(f"{d.get("k", "v")}")\ntorch._inductor.config.max_autotune = True\n'
    found_all = find_compile_flags(source, "3.12.9")
    assert [(f.line, f.kind, f.option) for f in found_all] == [(2, UNREADABLE, None), (3, FLAG, "max_autotune")]
    assert "the line is left out" in found_all[0].what
    # `match` arrived in 3.10: code a 3.9 log claims to have run with it is not that code.
    match = "match x:\n    case 1:\n        pass\n"
    assert find_compile_flags(match, HERE) == []
    assert any("does not parse as Python 3.9" in f.what for f in find_compile_flags(match, "3.9.18"))
    assert find_compile_flags("x = 1\n", "not a version") == []  # unreadable: the running Python's grammar


def test_size_and_depth_are_bounded() -> None:
    big = "x = 1\n" * (MAX_CODE_CHARS // 6 + 1)
    ((line, what, kind, _),) = [astuple(f) for f in find_compile_flags(big, HERE)]
    assert line == 0 and "over 524,288 characters" in what and kind == UNREADABLE
    for deep in (
        "x = " + "a + " * 20_000 + "a\n",
        "x = " + "(" * 180 + "1" + ")" * 180 + "\n",
        "x = 'a'" + " + 'a'" * 900,
    ):
        assert isinstance(find_compile_flags(deep, HERE), list)  # a finding or none, never a crash
    dense = "f(1)\n" * (MAX_CODE_CHARS // 5)  # the most syntax nodes per character: ~600,000
    assert find_compile_flags(dense, HERE) == [
        Finding(0, f"the code has over {MAX_SYNTAX_NODES:,} {NODES_WHY}", UNREADABLE)
    ]
    assert find_compile_flags("f(1)\n" * (MAX_SYNTAX_NODES // 8), HERE) == []
    many = find_compile_flags("import os\n" + "os.environ[k] = v\n" * 5000, HERE)
    assert len(many) == 51 and many[-1] == Finding(0, "and 4,950 more findings like these", UNREADABLE)
    # past the cap, the count keeps what it counts a FLAG: a caller judging FLAGs only still sees one
    flags = find_compile_flags("import os\n" + "os.environ[k] = v\n" * 60 + "os.environ['TORCHINDUCTOR_A'] = '1'\n")
    assert len(flags) == 51 and flags[-1] == Finding(0, "and 12 more findings like these", FLAG, "a")


@pytest.mark.parametrize("limit", [1000, 20000])
def test_an_expression_too_deep_to_read_hides_nothing_after_it(limit: int) -> None:
    """A string of 1,500 pieces is nested past MAX_FOLD_DEPTH: that expression is unreadable, and the code after it
    is still read (the read once stopped there, leaving a FLAG-only judge a mere note). The same verdict whatever the
    interpreter's recursion limit: torch's compiler raises it in the process, and CI once read the string whole."""
    deep = "".join(f"x{i} = 'a'" + " + 'a'" * 1500 + "\n" for i in range(2))
    code = deep + "import torch\ntorch._inductor.config.max_autotune = True\n"
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        found = {(f.line, f.kind, f.option, f.what.split(":")[0]) for f in find_compile_flags(code, HERE)}
    finally:
        sys.setrecursionlimit(before)
    assert found == {
        (0, UNREADABLE, None, "nests expressions too deeply to be read"),
        (4, FLAG, "max_autotune", "sets torch._inductor.config option 'max_autotune'"),
    }


def test_a_separator_line_inside_a_docstring_keeps_the_whole_file_as_the_code(tmp_path: Path) -> None:
    """A docstring line of 100 '=' once split the source section: the hash was of a prefix, the rest went to
    an 'extra code' section, and the prefix (an unclosed docstring) fell to the regex fallback."""
    source = f'"""Trainer.\n{SEP}\n"""\nimport torch\nmodel = torch.compile(\n    model,\n    mode="max-autotune",\n)\n'
    log = parse_log(write_log(tmp_path / "logs", LogSpec(source=source)))
    assert log.source_sha256 == hashlib.sha256(source.encode()).hexdigest()  # = sha256sum of the file
    assert log.source_text == source and log.extra_code == "" and log.source_lines == 8
    v = verify_paths([tmp_path / "logs" / Path(log.path).name], track="track_1_short", known_shards={})[0]
    evidence = [f.evidence for f in v.failures if f.rule == "compile-flags"]
    assert evidence == ["source line 5: passes mode= to torch.compile: model = torch.compile("]
    honest = source.replace('    mode="max-autotune",\n', "")
    log = parse_log(write_log(tmp_path / "honest", LogSpec(source=honest)))
    v = verify_paths([Path(log.path)], track="track_1_short", known_shards={})[0]
    assert not [f for f in v.failures if f.rule == "compile-flags"]


# --- the cache ------------------------------------------------------------------------------

MIXED = (  # findings of both kinds, on several lines
    "import torch._inductor.config as cfg\ncfg.coordinate_descent_tuning = True\n"
    "import os\nos.environ['TORCHINDUCTOR_MAX_AUTOTUNE'] = '1'\nexec(code)\n"
)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty on-disk cache of this test's own, and an empty in-process one."""
    monkeypatch.setenv("SPEEDRUN_CACHE", str(tmp_path))
    sourcecheck.clear_memo()
    yield tmp_path
    sourcecheck.clear_memo()


def _entries(root: Path) -> list[Path]:
    return sorted((root / sourcecheck.CACHE_NAMESPACE).rglob("*.json"))


def test_a_cache_hit_equals_a_fresh_analysis(cache_dir: Path) -> None:
    fresh = find_compile_flags(MIXED, HERE, cached=False)
    assert {f.kind for f in fresh} == {FLAG, UNREADABLE} and _entries(cache_dir) == []  # cached=False writes none
    assert find_compile_flags(MIXED, HERE) == fresh
    (entry,) = _entries(cache_dir)
    assert sourcecheck._decode(entry.read_bytes()) == tuple(fresh)  # what a later process reads back
    sourcecheck.clear_memo()
    assert find_compile_flags(MIXED, HERE) == fresh  # from the disk
    # the disk is read indeed (an entry stands for the analysis), and the process keeps what it read
    forged = [Finding(1, "forged", UNREADABLE)]
    entry.write_bytes(sourcecheck._encode(forged))
    sourcecheck.clear_memo()
    assert find_compile_flags(MIXED, HERE) == forged
    entry.unlink()
    assert find_compile_flags(MIXED, HERE) == forged
    # the key is the whole input: another Python version's grammar, other local modules, other code
    assert find_compile_flags(MIXED, "3.9.1") == fresh and find_compile_flags(MIXED, HERE, ["helper"]) == fresh
    assert find_compile_flags(MIXED + "\n", HERE) == fresh
    assert len(_entries(cache_dir)) == 3  # 3.9 (a grammar of its own), ["helper"], the other code


def test_findings_handed_out_are_copies(cache_dir: Path) -> None:
    found = find_compile_flags(MIXED, HERE)
    found.clear()
    assert find_compile_flags(MIXED, HERE) == find_compile_flags(MIXED, HERE, cached=False) != []


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        b'{"version": 1, "findings": []}',  # an entry of the version before
        b'{"version": 2, "findings": {}}',
        b'{"version": 2, "findings": [[2, "x", "flag"]]}',
        b'{"version": 2, "findings": [[2, "x", "bogus", null]]}',
        b'{"version": 2, "findings": [[2, "x", "unreadable", "max_autotune"]]}',
        b'{"version": 2, "findings": [[-1, "x", "flag", "a"]]}',
        b'{"version": 2, "findings": [[true, "x", "flag", "a"]]}',
        b'{"version": 2, "findings": [[2, 3, "flag", "a"]]}',
        b'{"version": 2, "findings": [' + b",".join([b'[1, "x", "unreadable", null]'] * 52) + b"]}",
        b'{"version": 2, "findings": []}' + b" " * (1 << 20),
        b"[" * 100_000,
    ],
    ids=lambda garbage: hashlib.sha256(garbage).hexdigest()[:8],
)
def test_a_corrupt_cache_entry_is_a_miss(cache_dir: Path, garbage: bytes) -> None:
    fresh = find_compile_flags(MIXED, HERE, cached=False)
    find_compile_flags(MIXED, HERE)
    (entry,) = _entries(cache_dir)
    entry.write_bytes(garbage)
    sourcecheck.clear_memo()
    assert find_compile_flags(MIXED, HERE) == fresh
    assert sourcecheck._decode(entry.read_bytes()) == tuple(fresh)  # and replaced by a good one


def test_the_cache_off_and_the_memo_bounded(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDRUN_CACHE", "off")
    for i in range(sourcecheck.MEMO_ENTRIES + 10):
        assert find_compile_flags(f"x = {i}\nexec(x)\n", HERE)
    assert len(sourcecheck._MEMO) == sourcecheck.MEMO_ENTRIES and _entries(cache_dir) == []
    assert find_compile_flags("x = 0\nexec(x)\n", HERE) == find_compile_flags("x = 0\nexec(x)\n", HERE, cached=False)


def test_the_public_records_read_the_same_cached_and_every_flag_names_its_option(
    cache_dir: Path, public_records: Path
) -> None:
    """Over the public speedrun's records (a clone beside the checkout; skipped without one): the findings of
    every distinct code read fresh, through the cache and back from the disk are the same, and every FLAG
    names the option it sets (what a caller needs to exempt coordinate_descent_tuning on the medium track)."""
    tracks = [public_records / t for t in ("track_1_short", "track_2_medium")]
    inputs: dict[tuple[str, str | None, tuple[str, ...]], None] = {}
    for path in sorted(p for t in tracks for p in t.rglob("*") if p.suffix in (".txt", ".log") and p.is_file()):
        log = parse_log(path)
        local = tuple(sorted(Path(name).stem for name in log.appended_files))
        for code in (log.source_text, log.extra_code):
            if code.strip():
                inputs.setdefault((code, log.python_version, local), None)
    assert len(inputs) > 100
    fresh = [find_compile_flags(code, version, local) for code, version, local in inputs]  # an empty cache: read
    assert 100 < len(_entries(cache_dir)) <= len(inputs)  # logs naming 3.12.1 and 3.12.3 share an entry
    sourcecheck.clear_memo()
    assert [find_compile_flags(code, version, local) for code, version, local in inputs] == fresh  # from the disk
    flags = [f for found in fresh for f in found if f.kind == FLAG]
    assert all(f.option for f in flags), [f for f in flags if not f.option]
    assert {f.option for f in flags} >= {"coordinate_descent_tuning", "mode=reduce-overhead"}
    assert all(f.kind in KINDS for found in fresh for f in found)
