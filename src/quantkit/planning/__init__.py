"""Planning: which scheme, which layers to leave alone, which KV-cache dtype, whether it fits.

The package is named ``planning`` so it never shadows the ``quantkit.plan()`` function. Modules:
``architectures`` (model traits from config + tensor names), ``ignore`` (ignore lists), ``kv`` (KV-cache
dtype), ``memory`` (weight/KV sizing and fits), ``rules`` (selection and warning tables), ``planner``
(``plan()`` and :class:`~quantkit.planning.planner.Plan`). Nothing here imports torch.
"""
