"""`python -m fq ...` runs the `fq` command line (so does `torchrun ... -m fq calib ...`)."""
