from edgec.cli import main

raise SystemExit(main())
