from alertvision.cli import main

raise SystemExit(main())
