/* mxrlhf config: prints the configuration as JSON: the defaults, or a file checked and
 * completed with defaults, with --set overrides applied; with --keys, every key with its
 * help line, range and default (from the sections' options tables). Every run saves the
 * one it used as <output>/config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "pipeline/config.h"

int cmd_config(int argc, char **argv)
{
    const char *config = NULL, *section = NULL, *preset = NULL;
    bool keys = false;
    arg_list_t sets = {0};
    arg_opt_t opts[] = {
        {"config", ARG_STRING, &config, "FILE", "read this file over the defaults (checks it)"},
        {"set", ARG_LIST, &sets, "S.K=V", "override one value (repeatable)"},
        {"preset", ARG_STRING, &preset, "NAME", "start from a preset: cpu (the defaults) or gpu "
         "(what `mxrlhf run --device cuda` uses)"},
        {"section", ARG_STRING, &section, "NAME", "print only this section"},
        {"keys", ARG_FLAG, &keys, NULL, "list the keys (help, range, default) instead"},
    };
    char details[2048];
    int at = snprintf(details, sizeof details, "Sections:");
    for (int i = 0; i < pipeline_nsections && at < (int)sizeof details; i++)
        at += snprintf(details + at, sizeof details - at, "\n  %-10s %s",
                       pipeline_sections[i].name, pipeline_sections[i].what);
    arg_spec_t spec = {"config", "Print the configuration (defaults unless --config).",
                       "[--config FILE] [--set SECTION.KEY=VALUE] [--section NAME] [--keys]",
                       details,
                       opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (!rc && section && !pipeline_section_find(section))
        rc = err_set(&e, ERR_INPUT, "--section %s: no such section", section);
    if (!rc && keys) {
        for (int i = 0; i < pipeline_nsections; i++) {
            const pipeline_section_t *s = &pipeline_sections[i];
            if (section && strcmp(section, s->name))
                continue;
            opt_keys_t k;
            opts_keys(s->table, &k);
            for (int j = 0; j < k.n; j++) {
                char help[400], name[96];
                if (k.ref[j].hidden)
                    continue;
                opts_ref_help(&k.ref[j], help, sizeof help);
                snprintf(name, sizeof name, "%s.%s", s->name, k.ref[j].f->key);
                printf("%-40s %s\n", name, help);
            }
        }
        return 0;
    }
    pipeline_config_t cfg;
    if (!rc)
        rc = cli_load_config_preset(config, preset, &sets, &cfg, &e);
    if (rc)
        return cli_report("config", &e);
    cJSON *j = section ? pipeline_section_json(&cfg, section) : pipeline_config_to_json(&cfg);
    if (!j) {
        err_set(&e, ERR_NOMEM, "out of memory");
        return cli_report("config", &e);
    }
    char *s = cJSON_Print(j);
    if (s)
        printf("%s\n", s);
    free(s);
    cJSON_Delete(j);
    return s ? 0 : ERR_NOMEM;
}
