"""`pdo config`: print every setting with the value in force and what it means."""

from pdo.core.config import Settings


def register(subparsers) -> None:
    parser = subparsers.add_parser("config", help="show the configuration variables and their values")
    parser.set_defaults(func=show)


def show(_args) -> int:
    for variable, value, meaning in Settings.from_env().describe():
        print(f"{variable}={value}\n    {meaning}")
    return 0
