from jaxreg.cli import main

raise SystemExit(main())
