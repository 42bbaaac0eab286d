/* mxrlhf config: prints the configuration as JSON: the defaults, or a file checked and
 * completed with defaults, with --set overrides applied. Every run saves the one it used
 * as <output>/config.json. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "pipeline/config.h"

int cmd_config(int argc, char **argv)
{
    const char *config = NULL, *section = NULL;
    arg_list_t sets = {0};
    arg_opt_t opts[] = {
        {"config", ARG_STRING, &config, "FILE", "read this file over the defaults (checks it)"},
        {"set", ARG_LIST, &sets, "S.K=V", "override one value (repeatable)"},
        {"section", ARG_STRING, &section, "NAME", "print only this section"},
    };
    char details[1024];
    int at = snprintf(details, sizeof details, "Sections:");
    for (int i = 0; i < pipeline_nsections && at < (int)sizeof details; i++)
        at += snprintf(details + at, sizeof details - at, "\n  %-10s %s",
                       pipeline_sections[i].name, pipeline_sections[i].what);
    arg_spec_t spec = {"config", "Print the configuration (defaults unless --config).",
                       "[--config FILE] [--set SECTION.KEY=VALUE] [--section NAME]", details,
                       opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    pipeline_config_t cfg;
    if (!rc)
        rc = cli_load_config(config, &sets, &cfg, &e);
    if (rc)
        return cli_report("config", &e);
    cJSON *j = section ? pipeline_section_json(&cfg, section) : pipeline_config_to_json(&cfg);
    if (!j) {
        err_set(&e, section ? ERR_INPUT : ERR_NOMEM, section ? "--section %s: no such section"
                                                             : "out of memory", section);
        return cli_report("config", &e);
    }
    char *s = cJSON_Print(j);
    if (s)
        printf("%s\n", s);
    free(s);
    cJSON_Delete(j);
    return s ? 0 : ERR_NOMEM;
}
