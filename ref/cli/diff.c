#include "util.h"
const char cli_help_diff[] = "stub\n";
int cmd_diff(const cli_cmd *cmd, int argc, char **argv) { (void)cmd; (void)argc; (void)argv; return 1; }
