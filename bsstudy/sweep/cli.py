"""Placeholder until this verb lands (replaced by its module)."""
from ..errors import UserError


def _todo(args):
    raise UserError(f'{args.verb} is not implemented yet')


def register(sub):
    sub.add_parser('plan', help='(not implemented yet)').set_defaults(func=_todo)
    sub.add_parser('submit', help='(not implemented yet)').set_defaults(func=_todo)
    sub.add_parser('status', help='(not implemented yet)').set_defaults(func=_todo)
