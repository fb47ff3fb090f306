"""Actions: what each user command does, apart from parsing and printing: projects, tasks,
pause, the systemd service group, doctor and the status dashboard.

Belongs here: a function per command that a click command calls. Must not: parse arguments or
print (openloop.cli). May import openloop.loop, openloop.adapters, openloop.state and the
primitives; actions may import each other without circles.
"""
