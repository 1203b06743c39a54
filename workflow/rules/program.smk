# The program under test when it is the user's (`program:` a C source or an ELF object;
# workflow/xdplab/program.py).  A C source is built on the controller with clang, rebuilt
# when it or a header beside it changes; every object is then loaded by the DUT agent
# through the verifier with its program name and globals, the observer around it, nothing
# attached: a compile error or a refusal ends the run before any traffic.  An `attached`
# program (the user's own loader) needs neither.


rule build_program:
    input:
        source=lambda wildcards: USER_PROGRAMS[wildcards.key],
        headers=lambda wildcards: program_headers(USER_PROGRAMS[wildcards.key]),
    output:
        obj=f"{PROGRAM_DIR}/{{key}}.bpf.o",
        manifest=f"{PROGRAM_DIR}/{{key}}.json",
    log:
        f"{PROGRAM_DIR}/logs/build_{{key}}.log",
    # Every program is built and checked before any trial runs, so that the trials of all
    # programs interleave in the run order (a comparison's drift favours none).
    priority: 14 * (len(ORDER) + 2)
    params:
        cflags=program.CFLAGS,
    script:
        "../scripts/build_program.py"


rule check_program:
    input:
        obj=program_object,
        build=program_build_manifest,
        connectivity=f"{BUILD_STAGE}/connectivity.json",
    output:
        PROGRAM_CHECK,
    log:
        f"{BUILD_STAGE}/logs/check_program_{{key}}.log",
    priority: 14 * (len(ORDER) + 2)
    params:
        program=lambda wildcards: USER_PROGRAMS[wildcards.key],
        name=SETTINGS["program_name"],
        globals=SETTINGS["program_globals"],
        port=SETTINGS["port"],
    script:
        "../scripts/check_program.py"
