"""The periodic-checkpoint hook, completing a finished run that was resumed.

A run killed while it wrote ``model_final.pth`` (or during the final evaluation) is resumed from
the checkpoint of its last iteration: ``start_iter == max_iter``, so detectron2's loop runs no
iteration, its ``PeriodicCheckpointer`` (which saves the final model after the last iteration)
never fires, and the final model stays missing for good. :class:`ResumablePeriodicCheckpointer`
then, and puts the trainer where an uninterrupted run stands after its last iteration, so that
detectron2's ``EvalHook`` runs the final evaluation and records its metrics at the same iteration
as that run would.
"""

import logging
import os

from detectron2.engine import hooks

from ..checkpoint.common import checkpoint_file_problem

__all__ = ["ResumablePeriodicCheckpointer"]

logger = logging.getLogger(__name__)


class ResumablePeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's :class:`~detectron2.engine.hooks.PeriodicCheckpointer` (same arguments) that,
    when training resumes at or past ``max_iter``, saves ``{file_prefix}_final.pth`` again if it
    is missing or incomplete.
    """

    def before_train(self):
        super().before_train()
        trainer = self.trainer
        if trainer.start_iter < trainer.max_iter:
            return
        finished = trainer.start_iter - 1  # the iteration the loaded checkpoint completed
        # detectron2's train() would leave iter at start_iter and add 1 after the empty loop (one
        # past an uninterrupted run); start from the state right after the finished iteration.
        trainer.iter = finished
        name = f"{self.file_prefix}_final"
        final = os.path.join(self.checkpointer.save_dir, name + ".pth")
        problem = checkpoint_file_problem(final)
        if problem is None:
            logger.info(f"Training had finished at iteration {finished}; {final} is complete")
            return
        logger.warning(f"Training had finished at iteration {finished}, but {final} {problem}: saving it again")
        self.checkpointer.save(name, iteration=finished)
