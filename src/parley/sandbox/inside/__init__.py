"""Scripts that run *inside* the sandbox (standard library only, plus pyseccomp when present). This directory is
bind-mounted read-only into every sandbox; nothing else of Parley is."""
