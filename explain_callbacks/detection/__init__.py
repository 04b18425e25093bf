"""What a check concludes: training statistics, shortcut discovery, alert rules, model health,
drift between checks, and the verdict sentences. Reads the records of ``attribution``; writes
nothing."""
