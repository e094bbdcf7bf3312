"""Contract tests: every registered method honours the harness contract; dependencies run one way; the cached loop equals the plain one."""
