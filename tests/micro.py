"""Config overrides of the training tests: the micro model on 64x32 images, batches of 16, data loaded in
the main process."""

MICRO = ["model.arch=tbpr-micro", "model.image_size=[64, 32]", "data.batch_size=16", "data.num_workers=0"]
# the same, with a metrics line every step and no evaluation
MICRO_LOGGED = [*MICRO, "log_every=1", "eval_every=0"]
