"""Fuzzing the front end: seeded mutants of model files through ``compile/build.py``
(``python -m compile.fuzz``; ``compile.fuzz.mutate`` makes them, ``compile.fuzz.worker``
checks them in processes that may be killed)."""
