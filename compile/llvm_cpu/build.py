"""Compile a model for an LLVM CPU target as the backends do: tune first when asked
(``compile.llvm_cpu.tuning``), then build with the target's tuning database when it has one
(``compile.llvm_cpu.pipeline``)."""
from __future__ import annotations

import sys

import tvm

from compile.llvm_cpu.pipeline import Built, compile_relax_module
from compile.llvm_cpu.tuning import (Log, open_database, options, searched_trials, tune,
                                     tuning_target)
from compile.targets import resolve_native


def compile_for_target(mod: tvm.IRModule, model, target, opts: dict,
                       log: Log = lambda m: print(m, file=sys.stderr, flush=True)
                       ) -> tuple[Built, dict]:
    """``tvm.compile`` for a backend, with the tuning database when one exists for
    (model, target) -- tuning first when ``opts["tune_trials"]`` asks for more trials.

    ``model``: ``compile.frontend.ModelInfo``; ``target``: ``compile.targets.Target``.
    Returns what was built and the manifest entries saying whether/how it was tuned.
    """
    db_dir, trials, rpc = options(opts, model.sha256, target.tvm)
    if trials > 0:
        tune(mod, target.tvm, trials, db_dir, rpc=rpc,
             cross_aarch64=target.kind == "linux-aarch64", log=log)
    database = open_database(db_dir, log)
    if database is None:
        return (compile_relax_module(mod, tvm.target.Target(resolve_native(target.tvm))),
                {"tuned": False})
    n = searched_trials(db_dir)
    if trials == 0:
        log(f"build: using tuning database {db_dir} ({n} trials), no re-tuning")
    return (compile_relax_module(mod, tuning_target(target.tvm), database),
            {"tuned": True, "tuning_db": str(db_dir), "tuning_trials": n})
