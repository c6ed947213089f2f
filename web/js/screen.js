// The projector's view: filled in by #18's screen work.
