#include "util.h"
const char cli_help_compress[] = "stub\n";
int cmd_compress(const cli_cmd *cmd, int argc, char **argv) { (void)cmd; (void)argc; (void)argv; return 1; }
