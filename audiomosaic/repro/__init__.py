"""The small-scale reproduction: suites of pre-training + evaluation cells over seeds (:mod:`~audiomosaic.repro.suites`),
regeneration checks (:mod:`~audiomosaic.repro.check`), statistics (:mod:`~audiomosaic.repro.stats`), the claims
report (:mod:`~audiomosaic.repro.report`) and the committed result tables with provenance
(:mod:`~audiomosaic.repro.results`).
"""
