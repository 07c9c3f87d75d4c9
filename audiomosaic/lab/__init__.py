"""What the notebooks call: the papermill runner and parameter files (:mod:`~audiomosaic.lab.runner`), every plot
(:mod:`~audiomosaic.lab.figures`) and the analysis helpers behind the ablation and effective-rank notebooks
(:mod:`~audiomosaic.lab.analysis`).
"""
