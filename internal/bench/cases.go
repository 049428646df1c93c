package bench

// Cases returns every case, in the order a report lists them.
func Cases() []Case {
	var out []Case
	out = append(out, callCases()...)
	out = append(out, eventCases()...)
	out = append(out, pipeCases()...)
	out = append(out, bridgeCases()...)
	out = append(out, processCases()...)
	out = append(out, presenceCases()...)
	return out
}
