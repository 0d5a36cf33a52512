"""The sandbox model-written code runs in: detection of what the host allows, the launchers (bubblewrap, or a
fallback of rlimits, a separate uid, Landlock and seccomp), and the persistent Python session of a container."""
