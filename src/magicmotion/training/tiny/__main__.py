from .recipe import main

raise SystemExit(main())
