"""Developer tools for this checkout, each run from the repository root as
`python -m scripts.<name>` (so `es4r` imports from the checkout with no path edits):
planted-fault and mutation checks, speed-up and browser measurements, the training plot, and
publishing or rebuilding the Hugging Face Space. The product steps are `python -m es4r`
commands; one-off measurements live in experiments/. setup.sh and install_apt.sh prepare a
machine."""
