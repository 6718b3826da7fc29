"""Running a bundle somewhere: here, on devices over SSH, or in an emulated arm64 userland.

- :mod:`~edgekit.device.bench`: ``edgekit bench``, the one entry point for all three, and its table;
- :mod:`~edgekit.device.settings`: :class:`RunnerSettings`, what the runner is asked to do, and its argv;
- :mod:`~edgekit.device.runner_report`: the runner as bench sees it (file name, exit codes, its JSON);
- :mod:`~edgekit.device.ssh`: a run on one device over OpenSSH (probe, upload, run, clean-up);
- :mod:`~edgekit.device.emulate`: the emulation API and running the runner under qemu;
- :mod:`~edgekit.device.userland`: building and caching the arm64 userland (qemu, rootfs, wheels, apt/.deb);
- :mod:`~edgekit.device.compare`: ``edgekit compare``, several runner reports side by side.

The runner itself, ``edgekit/runner/edgekit_runner.py``, stays one standalone file: it is copied
into every bundle.
"""
