"""Training engines and their plumbing: pre-training (:mod:`~audiomosaic.train.pretrain`), probes
(:mod:`~audiomosaic.train.probe`), fine-tuning (:mod:`~audiomosaic.train.finetune`), the shared optimiser step
(:mod:`~audiomosaic.train.step`), schedules (:mod:`~audiomosaic.train.optim`), torchrun/DDP
(:mod:`~audiomosaic.train.dist`), checkpoints (:mod:`~audiomosaic.train.checkpoint`), run logs
(:mod:`~audiomosaic.train.runlog`) and device/precision/seed/data-order helpers (:mod:`~audiomosaic.train.runtime`).
"""
