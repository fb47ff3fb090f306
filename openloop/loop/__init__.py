"""The loop: one iteration of one project, as a pipeline of small named steps (gate, repair,
select, worktree, prompt, agent, collect, validate, judge, promote, record), plus promotion
(merge, apply, reject) and the checks it runs.

Belongs here: what an iteration decides and in what order. Must not: parse command lines or
print (openloop.cli), or implement user-facing commands that are not an iteration
(openloop.actions). May import openloop.adapters, openloop.state and the primitives.
"""
