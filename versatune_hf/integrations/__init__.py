"""Everything that knows the Hugging Face `Trainer`, TRL and accelerate: the callback and the per-run object it
drives, the step/draw arithmetic, per-domain training losses, reference losses, the update history and
`VersaTuneSFTTrainer`."""
