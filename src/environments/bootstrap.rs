//! The platform convention, as the user data every environment instance boots with: find
//! the read-only disk whose serial is `bundle` (see [`crate::store::bundle`]), check the
//! archive on it against the SHA-256 its header gives, unpack it into `/var/app/current`
//! and run the application there with `PORT` set: its executable `start` if it has one,
//! else the `web:` line of its `Procfile`. The script is POSIX sh using only what busybox
//! and a distribution image both have; cloud-init (or nuage's test guest) runs it once at
//! first boot, and what it prints goes to the console.

use super::environment::APPLICATION_PORT;

/// The script, with `$PORT` fixed at [`APPLICATION_PORT`].
pub fn user_data() -> Vec<u8> {
    SCRIPT.replace("@PORT@", &APPLICATION_PORT.to_string()).into_bytes()
}

const SCRIPT: &str = r#"#!/bin/sh
# nuage environment bootstrap: the application bundle on the disk whose serial is "bundle",
# checked, unpacked and started on $PORT.
say() { echo "nuage-bootstrap: $*"; }
disk=""
for serial in /sys/block/*/serial; do
    [ "$(cat "$serial" 2>/dev/null)" = bundle ] || continue
    dir=${serial%/serial}
    disk=/dev/${dir##*/}
done
[ -n "$disk" ] || { say "no bundle disk"; exit 1; }
header=$(head -c 512 "$disk" | tr -d '\000')
field() { echo "$header" | sed -n "s/^$1 //p"; }
[ "$(field nuage-bundle)" = 1 ] || { say "$disk holds no bundle"; exit 1; }
size=$(field size) sum=$(field sha256) format=$(field format)
app=/var/app
rm -rf "$app" && mkdir -p "$app/current" && chmod 700 "$app"
dd if="$disk" bs=512 skip=1 2>/dev/null | head -c "$size" > "$app/bundle"
[ "$(sha256sum "$app/bundle" | cut -d' ' -f1)" = "$sum" ] || { say "the bundle does not match its SHA-256"; exit 1; }
case "$format" in
    tar.gz) tar -xzf "$app/bundle" -C "$app/current" ;;
    zip) unzip -q -o "$app/bundle" -d "$app/current" ;;
    *) say "unknown bundle format $format"; exit 1 ;;
esac || { say "cannot unpack the bundle"; exit 1; }
cd "$app/current" || exit 1
export PORT=@PORT@
say "starting the application on port $PORT"
if [ -f start ]; then
    chmod +x start
    exec ./start
elif [ -f Procfile ]; then
    exec sh -c "$(sed -n 's/^web: *//p' Procfile | head -n 1)"
fi
say "the bundle has neither start nor a Procfile web: line"
exit 1
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_valid_sh_with_its_port() {
        let script = String::from_utf8(user_data()).unwrap();
        assert!(script.starts_with("#!/bin/sh\n") && script.contains("export PORT=5000\n"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap");
        std::fs::write(&path, &script).unwrap();
        let status = std::process::Command::new("sh").arg("-n").arg(&path).status().unwrap();
        assert!(status.success(), "sh -n refuses the script");
    }
}
