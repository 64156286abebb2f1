package cheapi

// ResolveCommand exposes che-machine-exec's command resolution to tests.
func ResolveCommand(cmd []string, typ, cwd, shell string) []string {
	var me machineExec
	me.Cmd, me.Type, me.Cwd = cmd, typ, cwd
	return resolveCommand(me, shell)
}
