/* mxrlhf sft: the pipeline up to supervised fine-tuning (data, tokenizer, pretraining of
 * the embedded default's model, SFT), cached like `mxrlhf run` (see cmd_run.c). */
#include "cli/commands.h"

int cmd_sft(int argc, char **argv)
{
    return cli_pipeline("sft", argc, argv,
                        "Pretrain (embedded default) and fine-tune on chosen responses.", "sft",
                        false);
}
