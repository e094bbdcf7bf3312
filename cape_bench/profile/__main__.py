"""``python -m cape_bench.profile [profile options]`` (the same as ``cape-bench profile``)."""

from cape_bench.profile.command import main

raise SystemExit(main())
