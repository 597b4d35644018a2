"""Runs made of runs, on top of the one run of ``hf_transfer.training.run``.

``finetune(recipe)`` (``dispatch``) picks the protocol: automatic backbone selection, stages, cross-validation
and learning curves, the from-scratch baseline. Each sub-run is a plain ``run_single`` in a folder inside the
run's ``output.dir``; a protocol passes an ``extra_metrics`` callable down, never the other way.
"""
