"""The gradient-bias instrument (``bsstudy bias``): how biased is each objective's minibatch gradient?

Modules, in the order a run uses them (method and estimators: docs/bias.md):

- ``cli``: the ``bias`` verb, its ``Settings`` and their checks, and ``run`` (settings -> files);
- ``network``: the frozen network, the fixed pool of augmented pairs, the J^T operator, the objectives;
- ``measure``: batches from the pool, group-mean gradient errors, one row of bias.csv per cell;
- ``stats``: bias / noise / confidence intervals from the Gram matrix of the group errors;
- ``outputs``: bias.csv / bias.json, the text table, and the bias figure (``draw_bias_figure``), which
  ``bsstudy report`` draws too.

Importing this package (and ``cli``) stays free of torch, so ``bsstudy --help`` is fast.
"""
