from cape_bench.cli import main

raise SystemExit(main())
