"""Where a check goes: the run-directory format (one owner of its names, atomic writes, lock and
readers), the sinks, the HTML report, the terminal console and the CLI."""
