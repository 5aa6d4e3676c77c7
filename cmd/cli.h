// What every weightcast binary's command line has: --version, and --config
// FILE, a TOML file holding any of the binary's flags under their long names
// (weightcastctl: a subcommand's under [init], [update], ...). Flags given on
// the command line override the file's.
#ifndef WEIGHTCAST_CMD_CLI_H_
#define WEIGHTCAST_CMD_CLI_H_

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "common/version.h"

namespace weightcast {

inline void AddStandardFlags(CLI::App& app, const std::string& name) {
  app.set_version_flag("--version", name + " " + kWeightcastVersion);
  app.set_config("--config", "",
                 "TOML file of flags (long names without the dashes); the command line "
                 "overrides it");
  // A key the binary does not know is an error, not silently dropped.
  app.allow_config_extras(CLI::config_extras_mode::error);
}

// Parses the command line (and --config). Returns the exit code when the
// program should end now: 0 after --help or --version, 2 for bad usage (a
// bad flag, value or config file, told on stderr); nullopt to go on.
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return std::nullopt;
}

}  // namespace weightcast

#endif  // WEIGHTCAST_CMD_CLI_H_
