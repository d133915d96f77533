"""Benchmarks and experiments: speed and memory of attention, training and
decoding against references in the same process, the data stage at scale, the
attention comparison (additive vs dot-product vs GRU) with its report, and the
worked examples of the attention library.

Layer: the top library layer, above :mod:`model`, :mod:`data`, :mod:`inference`,
:mod:`evaluation` and :mod:`training`; only :mod:`commands` imports it.

Modules: ``timing`` (synchronize, median timing), ``attention_benchmark``,
``train_benchmark`` (our Transformer against ``reference``, the
``torch.nn.Transformer`` of the same shape), ``decode_benchmark`` (ours against
CTranslate2), ``data_benchmark`` (prepare/setup/loader at 29 k to 2 M pairs),
``compare``, ``compare_report`` and ``compare_record`` (the attention comparison,
its report, and the saved results and records of its runs), ``examples``
(d2l.ai's attention-pooling and Nadaraya-Watson examples, plotted).
"""
