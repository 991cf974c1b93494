"""``bsstudy report``: aggregate a study's runs into tables, figures and a citeable report.

Public entry point: :func:`bsstudy.report.build.build_report`. Modules: ``load`` (read a study),
``tables`` (summary, CIs, seed-paper tables, relative drops), ``figures`` (the figure list and its
drawing), ``reading`` (the report's prose from the tables), ``render`` (Markdown/HTML),
``references`` (published curves), ``synthetic`` (fabricated studies for tests and the benchmark).
"""
