"""`python -m server [--model ...] [--host ...] [--port ...]`: the same as `constrained serve`."""

from constrained.cli import main

if __name__ == "__main__":
    main(["serve", *__import__("sys").argv[1:]])
