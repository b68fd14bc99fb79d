from es4r.cli import main

raise SystemExit(main())
