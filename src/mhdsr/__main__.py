from mhdsr.cli import main

raise SystemExit(main())
