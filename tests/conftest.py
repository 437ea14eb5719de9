"""The test suite's root: pytest puts this folder on sys.path, so every test may import `shared_helpers`."""
