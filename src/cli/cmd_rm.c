/* mxrlhf rm: the pipeline up to the reward model and the held-out judge. --model names an
 * already fine-tuned model (then no pretraining and no SFT run). See cmd_run.c. */
#include "cli/commands.h"

int cmd_rm(int argc, char **argv)
{
    return cli_pipeline("rm", argc, argv,
                        "Train the reward model and the held-out judge (Bradley-Terry).",
                        "judge", true);
}
