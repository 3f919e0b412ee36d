"""Every command besides training, grouped by job (``python -m cgmlp_jax.tools.NAME``):

* compare runs: ``report`` (tables, curves, a published log overlaid; ``runlog`` reads a workdir);
* design search: ``sweep`` (runs or prints the points of ``sweep_points``), ``sweep_report``;
* figures of a trained model: ``visualize`` (a package; its command is ``__main__.py``);
* performance: ``benchmark``, ``step_profile`` (``timing``: median rates over timed windows);
* weights: ``export_weights`` (a workdir's best checkpoint -> ``weights/NAME.{msgpack,json}``).

Tools import training (``cgmlp_jax.train``), never the reverse.
"""
